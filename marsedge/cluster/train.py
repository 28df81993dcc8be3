"""``marsedge train --workers N``: the same training on N Ray Train workers.

Ray Train's ``TensorflowTrainer`` starts N workers and sets their ``TF_CONFIG``; each
builds a ``MultiWorkerMirroredStrategy`` and runs :func:`marsedge.train.trainer.train`,
the one-machine training loop, in step with the others: gradients are all-reduced every
step, so the N workers train one model.

Batch and learning rate:
    ``--batch-size`` stays the batch of one worker; the global batch is batch size x N
    (each step sees N times the tiles, an epoch has N times fewer steps). The peak
    learning rate is multiplied by sqrt(N), the square-root rule for Adam-type optimisers
    (AdamW here); warm-up and schedule keep their epoch counts. config.json records the
    global batch and the learning rate used. Give ``--learning-rate`` for another choice:
    it is then taken as the rate for the global batch, unscaled.

Run directory:
    the first worker (rank 0) writes ``--out`` exactly as a one-machine run does (same
    files, same names); the others write theirs to a temporary folder. ``--out`` (and the
    data file) must be reachable by the workers: one machine, or a shared filesystem.

Checkpoints and lost workers:
    after each epoch, rank 0 reports the run directory's resumable state (state.json,
    the last checkpoint, history, best weights) to Ray Train as a checkpoint, kept in
    ``.<out>.ray/`` beside the run directory. When a worker is lost, Ray Train restarts
    the group (up to ``max_failures`` times); each worker restores the last checkpoint
    into its run directory and resumes from that epoch, as ``--resume`` does.

Not on several workers (yet): distillation from teachers and weight averaging.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from marsedge.cluster import connect, require_ray
from marsedge.errors import MarsEdgeError, RunDirError

log = logging.getLogger(__name__)

MAX_FAILURES = 2
# What a worker needs from a run directory to resume it (everything but metrics.json).
_RESUMABLE = ("config.json", "split.npz", "state.json", "history.csv", "best.weights.h5", "preview.png")


def scaled_config(config, workers: int, learning_rate_given: bool = False):
    """The config N workers run: global batch = batch size x N, peak learning rate x sqrt(N)
    (unless the learning rate was given for the global batch)."""
    changes: dict[str, Any] = {"batch_size": config.batch_size * workers}
    if not learning_rate_given:
        changes["learning_rate"] = config.learning_rate * math.sqrt(workers)
    return config.replace(**changes)


def train_on_ray(
    config, workers: int, address: str | None = None, resume: bool = False, learning_rate_given: bool = False
) -> dict:
    """Trains ``config`` on ``workers`` Ray Train workers; returns the metrics rank 0 wrote.

    Raises:
        MissingExtraError: Ray is not installed.
        MarsEdgeError: the run directory is in the way, the settings are not supported on
            several workers, a worker reported an error, or training failed more than
            ``MAX_FAILURES`` times.
    """
    from marsedge.train import rundir

    out = Path(config.out).resolve()
    if config.teachers or config.ema_decay:
        raise MarsEdgeError("--teacher and --ema-decay are not supported with --workers above 1 (yet)")
    has_run = (out / rundir.STATE_FILE).exists() or (out / rundir.BEST_WEIGHTS).exists()
    if has_run and not resume:
        raise RunDirError(f"{out}: already holds a run; use --resume to continue it or choose another --out")
    if resume and not (out / rundir.STATE_FILE).exists():
        raise RunDirError(f"{out}: nothing to resume (no {rundir.STATE_FILE}); start without --resume")
    if not resume:
        config = scaled_config(config, workers, learning_rate_given)
    # the workers' working directory is Ray's: every path absolute
    paths = {name: getattr(config, name) for name in ("data", "split_from", "init_from")}
    config = config.replace(out=str(out), **{k: str(Path(v).resolve()) for k, v in paths.items() if v})
    import marsedge.train.tf_env  # noqa: F401  before Ray Train's own `import tensorflow`: quiet, Keras 2

    ray = connect(address, what="marsedge train --workers")
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    storage = out.parent / f".{out.name}.ray"
    trainer = TensorflowTrainer(
        _worker_loop,
        train_loop_config={"config": config.to_dict(), "resume": resume},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=_has_gpus(ray)),
        run_config=RunConfig(
            name="checkpoints",
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    log.info(
        "training on %d Ray workers: global batch %d, peak learning rate %g", workers, config.batch_size,
        config.learning_rate,
    )  # fmt: skip
    try:
        result = trainer.fit()
    except Exception as exc:
        raise MarsEdgeError(f"training on Ray failed: {_one_line(exc)}") from None
    error = (result.metrics or {}).get("error")
    if error:
        raise MarsEdgeError(error)
    import json

    return json.loads((out / rundir.METRICS_FILE).read_text())


def _worker_loop(settings: dict) -> None:
    """One Ray Train worker: ``train()`` under MultiWorkerMirroredStrategy."""
    import ray.train

    from marsedge.train.tf_env import tf  # TF_CONFIG is set: the strategy comes first

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    from marsedge.train.config import TrainConfig
    from marsedge.train.trainer import train

    context = ray.train.get_context()
    rank = context.get_world_rank()
    config = TrainConfig.from_dict(settings["config"])
    out = Path(config.out)
    if rank != 0:  # the others keep a run directory of their own, thrown away
        out = Path(tempfile.mkdtemp(prefix=f"marsedge-worker{rank}-")) / out.name
        config = config.replace(out=str(out))
    resume = bool(settings["resume"])
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a lost worker: back to the last reported epoch
        with checkpoint.as_directory() as saved:
            _restore(Path(saved), out)
        resume = True
    elif rank != 0 and resume:
        _restore(Path(settings["config"]["out"]), out)

    def report(epoch: int, row: dict) -> None:
        metrics = {"epoch": epoch + 1, "val_miou": float(row["val_miou"]), "loss": float(row["loss"])}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="marsedge-ckpt-") as staging:
            _snapshot(out, Path(staging))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging))

    try:
        train(config, resume=resume, progress=False, strategy=strategy, on_epoch_end=report)
    except MarsEdgeError as exc:  # bad data or run directory: the same on a retry, so report it and stop
        ray.train.report({"error": str(exc)}, checkpoint=None)
    finally:
        if rank != 0:
            shutil.rmtree(out.parent, ignore_errors=True)


def _snapshot(run: Path, target: Path) -> None:
    """Copies what resuming ``run`` needs (the last checkpoint only) into ``target``."""
    import json

    for name in _RESUMABLE:
        if (run / name).is_file():
            shutil.copy2(run / name, target / name)
    state = json.loads((run / "state.json").read_text())
    folder = Path(state["checkpoint"]).parent
    shutil.copytree(run / folder, target / folder)


def _restore(saved: Path, run: Path) -> None:
    """Puts a snapshot (or another worker's run directory) in place in ``run``."""
    import json

    run.mkdir(parents=True, exist_ok=True)
    for name in _RESUMABLE:
        if (saved / name).is_file():
            shutil.copy2(saved / name, run / name)
    state = json.loads((saved / "state.json").read_text())
    folder = Path(state["checkpoint"]).parent
    if not (run / folder).is_dir():
        shutil.copytree(saved / folder, run / folder)


def _has_gpus(ray: Any) -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


__all__ = ["MAX_FAILURES", "require_ray", "scaled_config", "train_on_ray"]

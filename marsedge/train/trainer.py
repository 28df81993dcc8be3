"""The training loop: data hygiene, split, AdamW + schedule, early stopping, checkpoints, resume."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marsedge import __version__
from marsedge.core.atomic import write_bytes, write_json, write_text
from marsedge.core.classes import CLASS_NAMES
from marsedge.core.metrics import confusion_matrix, iou_report
from marsedge.errors import DataError, MarsEdgeError, RunDirError
from marsedge.progress import ProgressBar
from marsedge.train import rundir
from marsedge.train.config import TrainConfig
from marsedge.train.data import file_sha256, load_tiles
from marsedge.train.distill import (
    check_file_split,
    check_same_split,
    make_distill_loss,
    soft_class_weights,
    teacher_targets,
)
from marsedge.train.predict import predict_classes
from marsedge.train.preview import choose_preview_tiles, write_preview
from marsedge.train.splits import compute_split, tile_split_config  # noqa: F401 (also used by callers of trainer)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
KEEP_CHECKPOINTS = 2
# An improved epoch's best weights and preview are written under these names (with the
# epoch index) and moved into place only after state.json records that epoch as the best
# (see _promote_pending_best).
PENDING_BEST = ".best.{epoch:04d}.pending.weights.h5"
PENDING_PREVIEW = ".preview.{epoch:04d}.pending.png"
MIX_FILE = "mix.json"  # written once mix_alpha's mix is in best.weights.h5
FINE_TUNED_WEIGHTS = "fine_tuned.weights.h5"  # the run's own best weights, before the mix


class TrainingDiverged(MarsEdgeError):
    """The loss became NaN or infinite."""


def _prepare(config: TrainConfig, out: Path, resume: bool):
    """Load, clean and split the data; write or check config.json and split.npz.

    Returns the tiles, the split indices, the derived settings and the data file's sha256.
    """
    if resume:
        tiles, data_hash = load_tiles(config.data, config.frame_pixels), file_sha256(config.data)
        run = rundir.read_run(out, need_weights=False)
        if run.data_sha256 and run.data_sha256 != data_hash:
            raise RunDirError(
                f"{config.data}: data changed since this run started (sha256 {run.data_sha256[:12]}… now "
                f"{data_hash[:12]}…); start a new run directory"
            )
        split = rundir.split_indices(run)
        return tiles, split, run.derived, data_hash
    tiles, split, derived, data_hash = compute_split(config)
    if str(config.init_from or "").endswith(".tflite"):  # the file's weights expect the file's normalisation
        derived.update(_file_normalization(Path(config.init_from)))
    out.mkdir(parents=True, exist_ok=True)
    with io.BytesIO() as buffer:
        np.savez(buffer, **split)
        write_bytes(out / rundir.SPLIT_FILE, buffer.getvalue())
    write_json(
        out / rundir.CONFIG_FILE,
        {"marsedge_version": __version__, "train": config.to_dict(), "data_sha256": data_hash, "derived": derived},
    )
    log.info(
        "data %s: %d tiles, dropped %d (%s); frames grouped as %s; train/val/test = %s",
        config.data,
        derived["tiles_used"],
        len(split["dropped"]),
        derived["cleaning"],
        derived["frame_grouping"],
        derived["split_sizes"],
    )
    log.info(
        "class pixel shares (train): %s",
        ", ".join(f"{n} {s:.1%}" for n, s in zip(CLASS_NAMES, derived["class_pixel_shares"])),
    )
    return tiles, split, derived, data_hash


def _file_normalization(path: Path) -> dict[str, float]:
    """The grey-level mean and std a .tflite export was trained with (its metadata's input table)."""
    from marsedge.core.metadata import read_metadata
    from marsedge.edge_runtime.errors import ModelError

    try:
        normalization = read_metadata(path)["input"]["normalization"]
        values = {"mean": float(normalization["mean"]), "std": float(normalization["std"])}
    except (ModelError, KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{path}: no input normalisation in its metadata ({exc})") from None
    log.info("normalisation of %s: mean %.2f, std %.2f", path, values["mean"], values["std"])
    return values


def _device_summary(tf) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU x{len(gpus)} ({', '.join(g.name for g in gpus)})"
    return f"CPU ({platform.processor() or platform.machine()}, {tf.config.threading.get_inter_op_parallelism_threads() or 'auto'} threads)"


def _strategy(tf, name: str):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _schedule(config: TrainConfig, steps_per_epoch: int, keras, tf):
    if config.schedule != "cosine":
        return config.learning_rate
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(config.warmup_epochs * steps_per_epoch, total // 2)

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = config.learning_rate * (step + 1.0) / max(warmup, 1)
            progress = tf.clip_by_value((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
            cosine = config.learning_rate * (0.02 + 0.98 * 0.5 * (1.0 + tf.cos(math.pi * progress)))
            return tf.where(step < warmup, warm, cosine)

        def get_config(self):
            return {}

    return WarmupCosine()


class _Progress:
    """Training progress per batch on a terminal's stderr (nothing elsewhere: epochs are logged)."""

    def __init__(self, keras, epoch: int, epochs: int, steps: int, batch_size: int, enabled: bool):
        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                outer.update(batch + 1, (logs or {}).get("loss", float("nan")))

        self.callback = Callback()
        self.epoch, self.epochs, self.steps, self.batch_size = epoch, epochs, steps, batch_size
        self.bar = ProgressBar(terminal_only=True, transient=True)  # close() erases it before the epoch's log line
        self.bar.enabled = self.bar.enabled and enabled
        self.start = time.perf_counter()

    def update(self, step: int, loss: float) -> None:
        if not self.bar.enabled or (step % 5 and step != self.steps):
            return
        rate = step * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
        self.bar(step, self.steps, f"epoch {self.epoch + 1}/{self.epochs} loss {loss:.4f} {rate:.0f} img/s")

    def close(self) -> None:
        self.bar.clear()


def _write_history(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    fields = list(rows[0].keys())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _save_checkpoint(tf, checkpoint, out: Path, epoch: int, state: dict) -> None:
    """Write the checkpoint files first, then point state.json at them (atomic rename)."""
    directory = out / CHECKPOINT_DIR
    directory.mkdir(exist_ok=True)
    name = f"epoch_{epoch:04d}"
    tmp = directory / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.write(str(tmp / "ckpt"))
    final = directory / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_json(out / rundir.STATE_FILE, {**state, "checkpoint": f"{CHECKPOINT_DIR}/{name}/ckpt"})
    for old in sorted(p for p in directory.glob("epoch_*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    for partial in directory.glob(".*.partial"):
        shutil.rmtree(partial, ignore_errors=True)


def _promote_pending_best(out: Path) -> None:
    """Finishes or undoes the best-weights update of the last epoch, per state.json.

    state.json is the commit point of an epoch. The pending best weights and preview of
    an epoch are moved into place only when state.json has committed that epoch as the
    best one; otherwise they belong to an epoch that was killed before it committed, and
    are removed. Without this, a kill between saving the best weights and writing
    state.json left best.weights.h5 from an epoch the run never recorded (or, in the
    first epoch, a run directory that could neither be resumed nor started again).
    """
    state_path = out / rundir.STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    best = state.get("best_epoch") if state.get("best_epoch") == state.get("epoch") else None
    for pattern, target in ((PENDING_BEST, rundir.BEST_WEIGHTS), (PENDING_PREVIEW, rundir.PREVIEW_FILE)):
        pending = pattern.replace("{epoch:04d}", "[0-9][0-9][0-9][0-9]")
        for source in out.glob(pending):
            if best is not None and source.name == pattern.format(epoch=best):
                source.replace(out / target)
            else:
                source.unlink()
        # a kill inside the atomic write of a pending file leaves its temporary (".NAME.xxxx")
        for temporary in out.glob(f".{pending}.*"):
            temporary.unlink()


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    strategy=None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train a model and write the run directory; returns the final metrics.

    With ``resume`` the run continues from the last complete checkpoint in ``config.out``
    (same data, split and optimizer state). At the end the run directory also gets
    ``curves.png`` and ``confusion.png`` (:mod:`marsedge.plots`).

    ``strategy``: a ``tf.distribute`` strategy made by the caller, one of several workers
    running this same function in step (``marsedge.cluster.train``: Ray Train and
    ``MultiWorkerMirroredStrategy``); ``config.batch_size`` is then the global batch,
    split between the workers, and each worker validates on its own. ``on_epoch_end(epoch,
    history_row)`` is called once an epoch is committed to the run directory.

    Raises:
        MarsEdgeError: bad data, a run directory in the way, or a diverged loss.
    """
    config = _open_run_dir(config, resume)
    from marsedge.train.tf_env import keras, tf  # a missing [train] extra is said before anything else

    check_inputs(config, resume)
    if strategy is not None and config.mix_alpha is not None:
        raise MarsEdgeError("mix_alpha: weights are mixed by a single-machine run (`marsedge train`), not by workers")
    out = Path(config.out)

    started = time.perf_counter()
    with _removed_if_unfinished(out, resume):
        tiles, split, derived, data_hash = _prepare(config, out, resume)
        source = _init_source(config, split, data_hash) if config.init_from and not resume else None
        keras.utils.set_random_seed(config.seed)
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        device = _device_summary(tf)
        if strategy is not None:
            device = f"{strategy.num_replicas_in_sync} workers (MultiWorkerMirroredStrategy), each {device}"
        log.info("device: %s", device)
        data = _Arrays.of(tiles, split)
        soft = _soft_targets(config, split, data_hash, derived, data.train_images, keras) if config.teachers else None
        run = _Training(config, out, derived, data, soft, tf, keras, progress, started, strategy)
        run.build(source)
    if resume:
        run.restore()
    preview_index = choose_preview_tiles(data.val_masks, config.preview_tiles, config.seed)
    for epoch in range(run.loop.start_epoch, config.epochs):
        if run.loop.since_best >= config.patience:
            break
        run.epoch(epoch, preview_index)
        if on_epoch_end is not None:
            on_epoch_end(epoch, run.loop.history[-1])
    mix = _mix(run, progress) if config.mix_alpha is not None else None
    metrics = run.final_metrics(tiles, split, device)
    if mix:
        metrics["mix"] = mix
    write_json(out / rundir.METRICS_FILE, metrics)
    _write_plots(out, run.loop.history, metrics)
    if mix:
        log.info("mixed weights: val mIoU %.4f; run directory %s", metrics["val"]["mean_iou"], out)
    else:
        log.info(
            "best val mIoU %.4f at epoch %d; run directory %s", metrics["val"]["mean_iou"], metrics["best_epoch"], out
        )
    return metrics


def _mix(run: _Training, progress: bool) -> dict:
    """Replace the run's best weights by ``mix_alpha`` x its last-epoch weights + the rest
    from the partner (``mix_with``: the start itself, or a partner run trained now). Keeps
    the unmixed best in ``fine_tuned.weights.h5``; ``mix.json`` records the mix and marks
    it done (a resume after it mixes nothing again)."""
    config, out, model = run.config, run.out, run.model
    if (out / MIX_FILE).exists():
        return json.loads((out / MIX_FILE).read_text())
    with run.average.applied() if run.average else contextlib.nullcontext():
        tuned = model.get_weights()
    if config.mix_with is None:
        partner = str(config.init_from)
        if partner.endswith(".tflite"):
            from marsedge.train.tflite_weights import load_tflite_weights

            load_tflite_weights(model, Path(partner))
        else:
            model.load_weights(str(Path(partner) / rundir.BEST_WEIGHTS))
    else:
        partner_config = config.partner()
        partner = partner_config.out
        if not (Path(partner) / rundir.METRICS_FILE).exists():
            log.info("training the run to mix with in %s", partner)
            train(partner_config, resume=(Path(partner) / rundir.STATE_FILE).exists(), progress=progress)
        model.load_weights(str(Path(partner) / rundir.BEST_WEIGHTS))
    alpha = config.mix_alpha
    model.set_weights([alpha * t + (1.0 - alpha) * p for t, p in zip(tuned, model.get_weights())])
    if not (out / FINE_TUNED_WEIGHTS).exists():
        shutil.copy2(out / rundir.BEST_WEIGHTS, out / FINE_TUNED_WEIGHTS)
    model.save_weights(str(out / rundir.BEST_WEIGHTS))
    mix = {
        "alpha": alpha,
        "fine_tuned": f"epoch {len(run.loop.history)} (last)" + (", weight average" if run.average else ""),
        "partner": partner,
    }
    write_json(out / MIX_FILE, mix)
    log.info("weights mixed: %.2f x epoch %d + %.2f x %s", alpha, len(run.loop.history), 1.0 - alpha, partner)
    return mix


def check_inputs(config: TrainConfig, resume: bool = False) -> None:
    """Refuse, before anything is loaded or written, a run whose data, ``split_from``,
    ``init_from`` or teachers are not there (a run directory, or a .tflite file).

    Raises:
        DataError: the data or ``split_from`` path is missing.
        RunDirError: a teacher or ``init_from`` is missing.
    """
    for name, value in (("data", config.data), ("split_from", config.split_from)):
        if name == "data" and not value:
            raise DataError('no data: give --data or a config with "data"')
        if value and not Path(value).exists():
            raise DataError(f"{value}: no such file" + ("" if name == "data" else f" ({name})"))
    sources = [("teacher", path) for path in config.teachers]
    if config.init_from and not resume:
        sources.append(("init_from", config.init_from))
    for role, value in sources:
        path = Path(value)
        if str(value).endswith(".tflite"):
            if not path.is_file():
                raise RunDirError(f"{path}: {role} file not found")
        elif not path.is_dir():
            raise RunDirError(f"{path}: {role} run directory not found")
        elif not (path / rundir.BEST_WEIGHTS).exists():
            raise RunDirError(f"{path}: {role} run directory holds no best weights (did its training finish an epoch?)")
    if config.mix_with:
        check_inputs(config.partner(), resume)


@contextlib.contextmanager
def _removed_if_unfinished(out: Path, resume: bool):
    """Remove ``out`` again when the setup inside fails in a run directory this run created."""
    created = not resume and not out.exists()
    try:
        yield
    except BaseException:
        if created and out.is_dir() and not (out / rundir.STATE_FILE).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _open_run_dir(config: TrainConfig, resume: bool) -> TrainConfig:
    """The config to run: with ``resume`` the run's own (with this config's epoch budget,
    recorded if it changed); otherwise ``config``, refused if ``config.out`` holds a run.
    Finishes or undoes the best-weights update a killed epoch left behind."""
    out = Path(config.out)
    if resume:
        if not (out / rundir.STATE_FILE).exists():
            raise RunDirError(f"{out}: nothing to resume (no {rundir.STATE_FILE}); start without --resume")
        saved = rundir.read_run(out, need_weights=False)
        if config.epochs != saved.config.epochs:
            record_epochs_change(out, config.epochs)
        config = saved.config.replace(epochs=config.epochs)
    elif (out / rundir.STATE_FILE).exists() or (out / rundir.BEST_WEIGHTS).exists():
        raise RunDirError(f"{out}: already holds a run; use --resume to continue it or choose another --out")
    if out.is_dir():
        _promote_pending_best(out)
    return config


@dataclass(frozen=True)
class _Arrays:
    """The training and validation tiles of a run (and the whole frames behind the training
    tiles, for frame data sets)."""

    train_images: np.ndarray
    train_masks: np.ndarray
    train_sources: np.ndarray | None
    val_images: np.ndarray
    val_masks: np.ndarray

    @classmethod
    def of(cls, tiles, split: dict[str, np.ndarray]) -> _Arrays:
        return cls(
            tiles.images[split["train"]], tiles.masks[split["train"]],
            tiles.sources[split["train"]] if tiles.sources is not None else None,
            tiles.images[split["val"]], tiles.masks[split["val"]],
        )  # fmt: skip


def _soft_targets(config: TrainConfig, split, data_hash: str, derived: dict, train_images: np.ndarray, keras):
    """The teachers' soft targets for the training tiles (see :mod:`marsedge.train.distill`)."""
    splits, hashes = split, data_hash
    if config.split_from:  # teachers may be trained on the tile file whose split these frames take
        _, tile_split, _, tile_hash = compute_split(tile_split_config(config))
        splits, hashes = [split, tile_split], [data_hash, tile_hash]
    soft = teacher_targets(
        config.teachers, splits, hashes, derived["output_classes"], train_images, config.distill_temperature
    )
    keras.backend.clear_session()  # drop the teachers; the student starts from the same seed as without them
    keras.utils.set_random_seed(config.seed)
    return soft


@dataclass
class _Loop:
    """Where the epoch loop stands; saved in state.json after every epoch."""

    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1  # 0-based; -1 before the first epoch
    since_best: int = 0
    lr_scale: float = 1.0
    earlier_seconds: float = 0.0  # wall time of the processes before a --resume, up to their last checkpoint


class _Training:
    """One training run in progress: the model, its optimizer and checkpoint, the loop state."""

    def __init__(
        self, config: TrainConfig, out: Path, derived: dict, data: _Arrays, soft, tf, keras, progress: bool,
        started: float, strategy=None,
    ):  # fmt: skip
        self.config, self.out, self.derived, self.data, self.soft = config, out, derived, data, soft
        # a strategy from the caller: one worker of several (validation stays on this worker)
        self.strategy, self.distributed = strategy, strategy is not None
        self.predict = _predict_local if self.distributed else predict_classes
        self.tf, self.keras, self.progress, self.started = tf, keras, progress, started
        self.steps = max(len(data.train_images) // config.batch_size, 1)
        self.loop = _Loop()
        self.average = None

    def build(self, source: rundir.RunInfo | Path | None) -> None:
        """Model, optimizer, loss and (with ``ema_decay``) the weight average, compiled."""
        from marsedge.train.keras_metrics import MeanIoU
        from marsedge.train.losses import make_consistency_loss, make_loss
        from marsedge.train.model import build_unet, count_macs

        config, derived, keras, tf = self.config, self.derived, self.keras, self.tf
        strategy = self.strategy or _strategy(tf, config.strategy)
        with strategy.scope():
            model = build_unet(
                config.model,
                input_shape=tuple(derived["input_shape"]),
                num_outputs=len(derived["output_classes"]),
                mean=derived["mean"],
                std=derived["std"],
            )
            if isinstance(source, Path):  # a float32 export: its folded layers, unfolded
                from marsedge.train.tflite_weights import load_tflite_weights

                load_tflite_weights(model, source)
            elif source is not None:  # before compile: the file's optimizer state is not wanted (fresh schedule)
                model.load_weights(str(source.path / rundir.BEST_WEIGHTS))
                log.info("weights from %s (its best epoch, val mIoU %s)", source.path,
                         source.metrics().get("val", {}).get("mean_iou", "?"))  # fmt: skip
            optimizer = keras.optimizers.AdamW(
                learning_rate=_schedule(config, self.steps, keras, tf), weight_decay=config.weight_decay
            )
            if config.mixed_precision:
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            loss = make_loss(config.loss, np.asarray(derived["class_weights"], np.float32), config.focal_gamma)
            if self.soft is not None:
                soft_weights = (
                    soft_class_weights(
                        derived["class_weights"], derived["class_pixel_shares"], derived["output_classes"]
                    )
                    if config.distill_class_weighted
                    else None
                )
                loss = make_distill_loss(loss, config.distill_weight, config.distill_temperature, soft_weights)
            if config.consistency_weight:
                loss = make_consistency_loss(loss, config.consistency_weight)
            model.compile(optimizer=optimizer, loss=loss, metrics=[MeanIoU()])
        self.params, self.macs = model.count_params(), count_macs(model)
        log.info("model: %s parameters, %.1f M MACs per tile", f"{self.params:,}", self.macs / 1e6)
        if config.ema_decay:
            from marsedge.train.ema import WeightAverage

            with strategy.scope():
                self.average = WeightAverage(tf, keras, model, config.ema_decay)
        self.model, self.optimizer = model, optimizer
        extra = {"ema": self.average.module} if self.average else {}
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **extra)

    def restore(self) -> None:
        """Continue from the checkpoint and loop state that state.json points at."""
        state = json.loads((self.out / rundir.STATE_FILE).read_text())
        self.checkpoint.read(str(self.out / state["checkpoint"])).expect_partial()
        start = state["epoch"] + 1
        history = _read_history(self.out / rundir.HISTORY_FILE)[:start]
        self.loop = _Loop(
            history=history, start_epoch=start, best_miou=state["best_miou"], best_epoch=state["best_epoch"],
            since_best=state.get("since_best", 0), lr_scale=state.get("lr_scale", 1.0),
            earlier_seconds=state.get("wall_seconds", sum(float(row.get("epoch_seconds") or 0) for row in history)),
        )  # fmt: skip
        loop = self.loop
        log.info(
            "resuming at epoch %d (best val mIoU %.4f at epoch %d)", start + 1, loop.best_miou, loop.best_epoch + 1
        )

    def epoch(self, epoch: int, preview_index: np.ndarray) -> None:
        """Train one epoch, validate, keep the best weights, write history and checkpoint."""
        config, loop = self.config, self.loop
        if config.schedule == "plateau":
            self.optimizer.learning_rate.assign(config.learning_rate * loop.lr_scale)
        tick = time.perf_counter()
        train_loss, train_miou = self._fit(epoch)
        train_seconds = time.perf_counter() - tick
        report, prediction, raw, use_raw = self._validate()
        miou = report["mean_iou"]
        row = {
            "epoch": epoch + 1,
            "loss": round(train_loss, 6),
            "train_miou": round(train_miou, 6),
            "val_miou": round(miou, 6),
            **raw,
            **{f"val_iou_{n}": round(v, 6) if v is not None else "" for n, v in report["class_iou"].items()},
            "learning_rate": _current_learning_rate(self.optimizer),
            "images_per_s": round(self.steps * config.batch_size / train_seconds, 1),
            "epoch_seconds": round(time.perf_counter() - tick, 1),
        }
        loop.history.append(row)
        improved = miou > loop.best_miou
        if improved:
            loop.best_miou, loop.best_epoch, loop.since_best = miou, epoch, 0
            self._keep_best(epoch, prediction, preview_index, use_raw)
        else:
            loop.since_best += 1
            if config.schedule == "plateau" and loop.since_best % max(config.patience // 3, 1) == 0:
                loop.lr_scale *= 0.5
        self._commit(epoch)
        log.info(
            "epoch %d/%d loss %.4f val mIoU %.4f%s%s (%s) %.0f img/s %.0fs",
            epoch + 1, config.epochs, train_loss, miou, " *" if improved else "", _weights_note(raw),
            " ".join(f"{n} {v:.3f}" for n, v in report["class_iou"].items() if v is not None),
            row["images_per_s"], row["epoch_seconds"],
        )  # fmt: skip

    def _fit(self, epoch: int) -> tuple[float, float]:
        """One pass over the (augmented) training tiles; the epoch's loss and train mIoU.

        Raises:
            TrainingDiverged: the loss is NaN or infinite.
        """
        from marsedge.train.augment import make_dataset

        config, data, loop = self.config, self.data, self.loop
        dataset = make_dataset(
            data.train_images, data.train_masks, config.batch_size, True, config.seed, epoch, config.augment, self.soft,
            sources=data.train_sources, paired=bool(config.consistency_weight),
        )  # fmt: skip
        if self.distributed:  # every worker builds the same pipeline; each takes its share of every global batch
            options = self.tf.data.Options()
            options.experimental_distribute.auto_shard_policy = self.tf.data.experimental.AutoShardPolicy.DATA
            dataset = dataset.with_options(options)
        bar = _Progress(self.keras, epoch, config.epochs, self.steps, config.batch_size, self.progress)
        callbacks = [bar.callback] + ([self.average.callback] if self.average else [])
        fit = self.model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=callbacks)
        bar.close()
        train_loss = float(fit.history["loss"][-1])
        if not math.isfinite(train_loss):
            kept = (
                f"the best checkpoint (epoch {loop.best_epoch + 1}, val mIoU {loop.best_miou:.4f}) is kept in {self.out}"
                if loop.best_epoch >= 0
                else f"no epoch completed, so {self.out} holds no checkpoint"
            )
            raise TrainingDiverged(f"training diverged at epoch {epoch + 1} (loss {train_loss}); {kept}")
        return train_loss, float(fit.history["miou"][-1])

    def _validate(self) -> tuple[dict, np.ndarray, dict, bool]:
        """The val report and masks of the weights this epoch offers for the best checkpoint,
        the history columns about raw and averaged weights, and whether the raw ones won."""
        val_images, val_masks, classes = self.data.val_images, self.data.val_masks, self.derived["output_classes"]
        prediction = self.predict(self.model, val_images, classes)
        report = iou_report(confusion_matrix(val_masks, prediction), CLASS_NAMES)
        raw, use_raw = {}, False
        if self.average:  # the averaged weights are validated and saved; the raw ones logged beside them
            raw_report, raw_prediction = report, prediction
            raw = {"val_miou_raw": round(raw_report["mean_iou"], 6)}
            with self.average.applied():
                prediction = self.predict(self.model, val_images, classes)
            report = iou_report(confusion_matrix(val_masks, prediction), CLASS_NAMES)
            if self.config.ema_select == "either":  # ... or offered for the best checkpoint when they score higher
                use_raw = raw_report["mean_iou"] > report["mean_iou"]
                raw.update(val_miou_average=round(report["mean_iou"], 6), val_weights="raw" if use_raw else "average")
                if use_raw:
                    report, prediction = raw_report, raw_prediction
        return report, prediction, raw, use_raw

    def _keep_best(self, epoch: int, prediction: np.ndarray, preview_index: np.ndarray, use_raw: bool) -> None:
        """Write this epoch's weights and preview as pending best (promoted once state.json commits)."""
        with self.average.applied() if self.average and not use_raw else contextlib.nullcontext():
            self.model.save_weights(str(self.out / PENDING_BEST.format(epoch=epoch)))
        data = self.data
        write_preview(
            self.out / PENDING_PREVIEW.format(epoch=epoch),
            data.val_images[preview_index],
            data.val_masks[preview_index],
            prediction[preview_index],
        )

    def _commit(self, epoch: int) -> None:
        """history.csv, then the checkpoint and state.json (the epoch's commit point), then
        the pending best weights into place."""
        loop = self.loop
        _write_history(self.out / rundir.HISTORY_FILE, loop.history)
        _save_checkpoint(
            self.tf, self.checkpoint, self.out, epoch,
            {"epoch": epoch, "best_miou": loop.best_miou, "best_epoch": loop.best_epoch, "since_best": loop.since_best,
             "lr_scale": loop.lr_scale, "wall_seconds": round(self._wall_seconds(), 1)},
        )  # fmt: skip
        _promote_pending_best(self.out)

    def _wall_seconds(self) -> float:
        return self.loop.earlier_seconds + time.perf_counter() - self.started

    def final_metrics(self, tiles, split: dict[str, np.ndarray], device: str) -> dict:
        """metrics.json: the best weights scored on val (and test), size, speed and provenance."""
        model, classes, predict = self.model, self.derived["output_classes"], self.predict
        if self.distributed:  # the best weights go into a model of this worker alone (mirrored variables refuse them)
            from marsedge.train.model import build_unet

            derived = self.derived
            model = build_unet(
                self.config.model, input_shape=tuple(derived["input_shape"]), num_outputs=len(classes),
                mean=derived["mean"], std=derived["std"],
            )  # fmt: skip
        model.load_weights(str(self.out / rundir.BEST_WEIGHTS))
        metrics = {
            "marsedge_version": __version__,
            "best_epoch": self.loop.best_epoch + 1,
            "epochs_run": len(self.loop.history),
            "val": iou_report(
                confusion_matrix(self.data.val_masks, predict(model, self.data.val_images, classes)), CLASS_NAMES
            ),
            "parameters": self.params,
            "macs_per_tile": self.macs,
            "dropped_samples": split["dropped"].tolist(),
            "cleaning": self.derived.get("cleaning"),
            "split_sizes": self.derived.get("split_sizes"),
            "device": device,
            "wall_seconds": round(self._wall_seconds(), 1),
        }
        if len(split["test"]):
            test_images, test_masks = tiles.images[split["test"]], tiles.masks[split["test"]]
            metrics["test"] = iou_report(
                confusion_matrix(test_masks, predict(model, test_images, classes)), CLASS_NAMES
            )
        return metrics


def _predict_local(model, images: np.ndarray, output_classes: list[int], batch_size: int = 64) -> np.ndarray:
    """:func:`predict_classes` by direct calls on this worker alone: no collective ops, so
    one worker of several validates without the others."""
    ids = np.asarray(output_classes, dtype=np.uint8)
    parts = [
        ids[np.argmax(np.asarray(model(images[i : i + batch_size, ..., None].astype(np.float32), training=False)), -1)]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros(images.shape, np.uint8)


def _weights_note(raw: dict) -> str:
    """The epoch log's note on raw and averaged weights (with ``ema_decay``)."""
    if "val_weights" in raw:
        return f" ({raw['val_weights']} weights; average {raw['val_miou_average']:.4f}, raw {raw['val_miou_raw']:.4f})"
    return f" (raw weights {raw['val_miou_raw']:.4f})" if raw else ""


def _write_plots(out: Path, history: list[dict], metrics: dict) -> None:
    """curves.png and confusion.png (val, best weights) in the run directory. A plot that
    cannot be drawn (no matplotlib, a full disk) is logged, never fatal: the run is done."""
    from marsedge.plots import CONFUSION_FILE, CURVES_FILE, confusion_png, curves_png

    try:
        curves_png(history, out / CURVES_FILE, title=out.name)
        confusion_png(metrics["val"]["confusion_matrix"], out / CONFUSION_FILE,
                      title=f"{out.name}: val, best epoch {metrics['best_epoch']}")  # fmt: skip
    except MarsEdgeError as exc:
        log.warning("no plots: %s", exc)
    except (OSError, ValueError) as exc:
        log.warning("%s: plots not written (%s)", out, exc)


def _init_source(config: TrainConfig, split: dict[str, np.ndarray], data_hash: str) -> rundir.RunInfo | Path:
    """The run named by ``config.init_from``, checked to share this run's data, model shape and split;
    or a float32 .tflite export, checked by the split its metadata records (a frame run may
    also match the split of the tile file it inherits), its layers checked when loaded.

    (It cannot be this run's own directory: that holds no run yet, or train() refused it.)
    """
    if str(config.init_from).endswith(".tflite"):
        from marsedge.core.metadata import read_metadata
        from marsedge.edge_runtime.errors import ModelError

        path = Path(config.init_from)
        try:
            metadata = read_metadata(path)
        except ModelError as exc:
            raise RunDirError(f"{path}: {exc}") from None
        splits, hashes = [split], [data_hash]
        if config.split_from:
            _, tile_split, _, tile_hash = compute_split(tile_split_config(config))
            splits, hashes = [split, tile_split], [data_hash, tile_hash]
        check_file_split(path, metadata, splits, hashes)
        return path
    source = rundir.read_run(config.init_from)
    check_same_split(source, split, data_hash)
    if source.config.model != config.model:
        raise RunDirError(
            f"{source.path}: its model shape differs from this run's ({source.config.model} vs {config.model})"
        )
    return source


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _current_learning_rate(optimizer) -> float:
    rate = getattr(optimizer, "inner_optimizer", optimizer).learning_rate
    if callable(rate):
        rate = rate(optimizer.iterations)
    return float(np.asarray(rate))


def record_epochs_change(out: Path, epochs: int) -> None:
    """Note in config.json that a resume changed the epoch budget (the cosine schedule follows it)."""
    path = out / rundir.CONFIG_FILE
    raw = json.loads(path.read_text())
    state = json.loads((out / rundir.STATE_FILE).read_text())
    raw.setdefault("epoch_changes", []).append(
        {"after_epoch": state["epoch"] + 1, "from": raw["train"]["epochs"], "to": epochs}
    )
    raw["train"]["epochs"] = epochs
    write_json(path, raw)
    log.info(
        "epoch budget changed from %s to %d after epoch %d",
        raw["epoch_changes"][-1]["from"],
        epochs,
        state["epoch"] + 1,
    )

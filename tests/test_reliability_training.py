"""Training faults: kill -9 at chosen points and at random moments, then `--resume`; a NaN
loss; a data file that changed between runs. All slow (each step is a TensorFlow process).

Each step runs the real ``marsedge train`` CLI in a child process through a small driver
that can inject one fault (``point@epoch``, epoch 1-based):

- ``after-best``: SIGKILL right after the improved epoch's best weights were saved;
- ``mid-checkpoint``: the checkpoint files written and one truncated, then SIGKILL;
- ``mid-history`` / ``mid-state``: SIGKILL halfway through writing history.csv / state.json;
- ``before-state``: SIGKILL after the checkpoint directory is in place, before state.json;
- ``nan``: the loss becomes NaN from that epoch on.

After every kill the run directory must be consistent (state.json readable and pointing
at a complete checkpoint, history without duplicated epochs) and ``--resume`` must finish
the run; at the end, history holds epochs 1..N once each and best.weights.h5 holds the
weights of the best epoch history names (its recomputed val mIoU equals that row's).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("marsedge.train.tf_env")

from marsedge.train.synthetic import write_dataset  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RANDOM_KILLS = int(os.environ.get("MARSEDGE_RANDOM_KILLS", "2"))

DRIVER = r"""
import os, signal, sys
from pathlib import Path

point, _, at = sys.argv[1].partition("@")
at = int(at or 0)
from marsedge.core import atomic
from marsedge.train import augment, losses, trainer

current = {"epoch": 0}  # 1-based epoch in progress


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def torn(path, text):
    # A write killed halfway: the temporary file beside `path` has part of the text.
    with atomic.atomic_path(path) as tmp:
        tmp.write_bytes(text[: len(text) // 2].encode())
        die()


real_make_dataset = augment.make_dataset
poison = []


def make_dataset(*args, **kwargs):
    current["epoch"] = args[5] + 1 if len(args) > 5 else kwargs["epoch"] + 1
    if point == "nan" and current["epoch"] >= at and poison:
        poison[0].assign(1.0)
    return real_make_dataset(*args, **kwargs)


augment.make_dataset = make_dataset

if point == "nan":
    real_make_loss = losses.make_loss

    def make_loss(*args, **kwargs):
        from marsedge.train.tf_env import tf

        base = real_make_loss(*args, **kwargs)
        poison.append(tf.Variable(0.0, trainable=False))

        def loss(y_true, y_pred):
            value = base(y_true, y_pred)
            return tf.where(poison[0] > 0, tf.constant(float("nan"), value.dtype), value)

        return loss

    losses.make_loss = make_loss

if point == "after-best":
    real_preview = trainer.write_preview

    def write_preview(*args, **kwargs):
        if current["epoch"] == at:
            die()
        return real_preview(*args, **kwargs)

    trainer.write_preview = write_preview

if point == "mid-history":
    real_history = trainer._write_history

    def write_history(path, rows):
        if current["epoch"] == at:
            torn(path, "epoch,loss,val_miou\n1,0.5,0.1\n2,0.4,0.2\n")
        return real_history(path, rows)

    trainer._write_history = write_history

if point in ("mid-state", "before-state"):
    real_write_json = trainer.write_json

    def write_json(path, value):
        if Path(path).name == "state.json" and current["epoch"] == at:
            if point == "before-state":
                die()
            import json
            torn(path, json.dumps(value))
        return real_write_json(path, value)

    trainer.write_json = write_json

if point == "mid-checkpoint":
    real_save = trainer._save_checkpoint

    def save_checkpoint(tf, checkpoint, out, epoch, state):
        if current["epoch"] == at:
            partial = Path(out) / trainer.CHECKPOINT_DIR / f".epoch_{epoch:04d}.partial"
            checkpoint.write(str(partial / "ckpt"))
            data = max(partial.glob("ckpt.data-*"), key=lambda p: p.stat().st_size)
            data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
            die()
        return real_save(tf, checkpoint, out, epoch, state)

    trainer._save_checkpoint = save_checkpoint

sys.argv = ["marsedge", "train", *sys.argv[2:]]
from marsedge.cli import main

main()
"""

TINY = {
    "model": {
        "base_filters": 4,
        "depth": 2,
        "dilation_rates": [1, 2],
        "dropout": 0.0,
        "bottleneck_filters": None,
        "stem_stride": 1,
    },
    "batch_size": 16,
    "preview_tiles": 4,
    "patience": 100,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("training-faults")
    data = write_dataset(root / "tiny.npz", count=64, seed=0)
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    return data, config


def train(setup, out: Path, epochs: int, fault: str = "none", resume: bool = False, wait: bool = True):
    data, config = setup
    args = [sys.executable, "-c", DRIVER, fault, "--data", str(data), "--out", str(out), "--epochs", str(epochs),
            "--config", str(config)] + (["--resume"] if resume else [])  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


def history_epochs(out: Path) -> list[int]:
    path = out / "history.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def check_consistent(out: Path) -> int:
    """What a crash may leave: returns the last committed epoch (1-based)."""
    state = json.loads((out / "state.json").read_text())  # never torn: written atomically
    checkpoint = out / state["checkpoint"]
    assert checkpoint.with_name("ckpt.index").exists(), state
    epochs = history_epochs(out)
    assert epochs == list(range(1, len(epochs) + 1)), epochs  # no duplicates, no gaps
    committed = state["epoch"] + 1
    assert len(epochs) in (committed, committed + 1)  # history is written just before state
    assert (out / "best.weights.h5").exists()
    return committed


def check_finished(out: Path, epochs: int) -> None:
    assert history_epochs(out) == list(range(1, epochs + 1))
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == epochs - 1
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "history.csv", newline="") as handle:
        rows = {int(r["epoch"]): r for r in csv.DictReader(handle)}
    # best.weights.h5 is the best epoch's: re-scoring it gives that epoch's val mIoU.
    assert metrics["best_epoch"] == state["best_epoch"] + 1
    assert float(rows[metrics["best_epoch"]]["val_miou"]) == pytest.approx(metrics["val"]["mean_iou"], abs=2e-6)
    assert not list(out.glob(".*pending*")) and not list((out / "checkpoints").glob(".*.partial"))


def test_kill_in_the_first_epoch_leaves_a_directory_that_can_start_again(setup, tmp_path, record_property):
    """A kill after the first best weights were saved but before state.json used to leave
    best.weights.h5 without state.json: `--resume` said "nothing to resume" and a new
    start said "already holds a run" -- a dead end."""
    record_property("tried", "training.kill_first_epoch")
    out = tmp_path / "run"
    killed = train(setup, out, 2, "after-best@1")
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "best.weights.h5").exists() and not (out / "state.json").exists()
    refused = train(setup, out, 2, resume=True)
    assert refused.returncode == 1 and "nothing to resume" in refused.stderr and "Traceback" not in refused.stderr
    again = train(setup, out, 2)
    assert again.returncode == 0, again.stderr[-2000:]
    check_finished(out, 2)
    record_property("passed", "training.kill_first_epoch")


def test_kills_at_each_write_then_resume_finishes_without_corruption(setup, tmp_path, record_property):
    out = tmp_path / "run"
    epochs = 6
    steps = ["after-best@2", "mid-checkpoint@3", "before-state@4", "mid-state@5", "mid-history@6"]
    for i, fault in enumerate(steps):
        record_property("tried", f"training.kill.{fault.split('@')[0]}")
        proc = train(setup, out, epochs, fault, resume=i > 0)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr[-2000:])
        committed = check_consistent(out)
        assert committed == int(fault.split("@")[1]) - 1, (fault, committed)
        if fault.startswith("after-best"):
            # Finish the run right here (no more epochs): best.weights.h5 must still be the
            # committed best epoch's, not the killed epoch's (it used to be: the final
            # metrics then disagreed with history.csv).
            stopped = train(setup, out, committed, resume=True)
            assert stopped.returncode == 0, stopped.stderr[-2000:]
            check_finished(out, committed)
        record_property("passed", f"training.kill.{fault.split('@')[0]}")
    record_property("tried", "training.resume")
    done = train(setup, out, epochs, resume=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    check_finished(out, epochs)
    record_property("passed", "training.resume")


def test_kill_at_random_moments_then_resume(setup, tmp_path, record_property):
    """SIGKILL from outside at a random moment of an epoch (seeded delays), twice (or
    $MARSEDGE_RANDOM_KILLS times), resuming after each."""
    rng = np.random.default_rng(3)
    out = tmp_path / "run"
    epochs = 2 + RANDOM_KILLS
    for i in range(RANDOM_KILLS):
        record_property("tried", "training.kill.random")
        proc = train(setup, out, epochs, resume=i > 0, wait=False)
        # Wait for one more committed epoch, then kill somewhere in the next one.
        before = json.loads((out / "state.json").read_text())["epoch"] if (out / "state.json").exists() else -1
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "state.json").exists() and json.loads((out / "state.json").read_text())["epoch"] > before:
                break
            time.sleep(0.1)
        time.sleep(float(rng.uniform(0.0, 6.0)))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        check_consistent(out)
        record_property("passed", "training.kill.random")
    record_property("tried", "training.resume")
    done = train(setup, out, epochs, resume=True)
    assert done.returncode == 0, done.stderr[-2000:]
    check_finished(out, epochs)
    record_property("passed", "training.resume")


def test_nan_loss_stops_with_a_message_and_keeps_the_best_checkpoint(setup, tmp_path, record_property):
    record_property("tried", "training.nan")
    out = tmp_path / "run"
    assert train(setup, out, 1).returncode == 0
    best = hashlib.sha256((out / "best.weights.h5").read_bytes()).hexdigest()
    state = (out / "state.json").read_text()

    diverged = train(setup, out, 3, "nan@2", resume=True)
    assert diverged.returncode == 1
    errors = [line for line in diverged.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in diverged.stderr
    assert errors[0].startswith(
        "error: training diverged at epoch 2 (loss nan); the best checkpoint (epoch 1, val mIoU "
    )
    assert hashlib.sha256((out / "best.weights.h5").read_bytes()).hexdigest() == best
    assert (out / "state.json").read_text() == state and history_epochs(out) == [1]

    first = train(setup, tmp_path / "first", 2, "nan@1")
    assert first.returncode == 1
    assert "training diverged at epoch 1 (loss nan); no epoch completed, so" in first.stderr
    record_property("passed", "training.nan")


def test_changed_data_is_reported_on_resume(setup, tmp_path, record_property):
    record_property("tried", "training.data_changed")
    data, config = setup
    copy = tmp_path / "data.npz"
    copy.write_bytes(data.read_bytes())
    out = tmp_path / "run"
    assert train((copy, config), out, 1).returncode == 0
    write_dataset(copy, count=64, seed=99)
    resumed = train((copy, config), out, 2, resume=True)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"error: {copy}: data changed since this run started (sha256 " in errors[0]
    assert errors[0].endswith("start a new run directory")
    assert history_epochs(out) == [1]
    record_property("passed", "training.data_changed")

"""TensorFlow commands are quiet by default (no CUDA probe errors, oneDNN notices or
matplotlib font-cache lines); --verbose shows what the libraries say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a TensorFlow command does before its first line of output: the CLI's logging set-up,
# TensorFlow's import and device probe (cuInit on a CPU machine), an op, and matplotlib's
# font cache built from scratch (MPLCONFIGDIR is a fresh directory).
CHILD = """
import sys
from marsedge.cli import _setup_logging
_setup_logging(sys.argv[1] == "verbose")
if sys.argv[2] == "tf":
    import marsedge.train.tf_env as env
    env.tf.reduce_sum(env.tf.ones((4, 4))).numpy()
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
"""


def run_child(tmp_path: Path, mode: str, tf: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MARSEDGE_VERBOSE")}
    env["MPLCONFIGDIR"] = str(tmp_path / f"mpl-{mode}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", CHILD, mode, "tf" if tf else "no-tf"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip


def test_tensorflow_and_matplotlib_are_quiet_by_default(tmp_path):
    pytest.importorskip("tensorflow")
    child = run_child(tmp_path, "quiet", tf=True)
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""


def test_verbose_shows_what_the_libraries_say(tmp_path):
    pytest.importorskip("matplotlib")
    child = run_child(tmp_path, "verbose", tf=False)
    assert child.returncode == 0, child.stderr
    assert "fontManager" in child.stderr  # matplotlib's INFO line about its new font cache


# ---- each command as a user runs it: stderr holds only marsedge's own lines ---------------------

TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"
OWN_LINE = re.compile(
    r"^(\d\d:\d\d:\d\d [DIWE] |\[[#.]+\] |error: |warning: |WARNING: |wrote |  )"  # log, progress, messages
)


def foreign_lines(stderr: str) -> list[str]:
    """The stderr lines that are not marsedge's own: a library's log, a native notice."""
    return [line for line in stderr.splitlines() if line.strip() and not OWN_LINE.match(line)]


def run_cli(
    tmp_path: Path, *args: str, module: str = "marsedge.cli", timeout: int = 900
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MARSEDGE_VERBOSE", "RAY_ADDRESS")}
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env
    )


def test_foreign_lines_are_told_from_marsedge_s_own():
    stderr = (
        "01:43:40 I 8 frames (0 done earlier) on 1 worker(s) x 2 thread(s)\n[####....] 4/8 a.png\n"
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
        "2026-12-07 01:43:32,570\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled\n"
        "[2026-12-07 01:43:43,006 E 13969 13969] core_worker.cc:2465: Actor with class name\n"
        "fully_quantize: 0, inference_type: 6, input_inference_type: INT8\n"
    )
    assert len(foreign_lines(stderr)) == 4


def test_bench_is_quiet(tmp_path):
    from marsedge.train.synthetic import write_dataset

    data = write_dataset(tmp_path / "tiles.npz", 8, seed=0)
    result = run_cli(
        tmp_path, "bench", str(TINY), "--data", str(data), "--threads", "1", "--runs", "2", "--warmup", "0",
        "--frame-runs", "1", "--no-peak", "--out", str(tmp_path / "bench"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert foreign_lines(result.stderr) == [], result.stderr


@pytest.mark.slow
def test_export_is_quiet(tmp_path):
    pytest.importorskip("tensorflow")
    from _runs import make_tiny_run

    run = make_tiny_run(tmp_path)
    result = run_cli(
        tmp_path, "export", str(run), "--out", str(tmp_path / "export"), "--formats", "float32,qat",
        "--qat-epochs", "0", "--no-gate",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert foreign_lines(result.stderr) == [], result.stderr  # no XNNPACK delegate, no converter line


@pytest.mark.slow
def test_batch_is_quiet(tmp_path):
    pytest.importorskip("ray")
    from marsedge.train.synthetic import write_png_frames

    frames = write_png_frames(tmp_path / "frames", 3, size=128, seed=7)
    result = run_cli(
        tmp_path, "batch", str(frames[0].parent), "--out", str(tmp_path / "out"), "--model", str(TINY),
        "--workers", "1", "--address", "local",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 segmented" in result.stdout
    assert foreign_lines(result.stderr) == [], result.stderr  # no token notice, core_worker line, progress-bar notice


@pytest.mark.slow
def test_train_on_ray_workers_is_quiet(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("tensorflow")
    import json

    from _runs import make_tiny_run

    config = json.loads((make_tiny_run(tmp_path) / "config.json").read_text())["train"]
    config.pop("out", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_cli(
        tmp_path, "train", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "run"), "--epochs", "1",
        "--batch-size", "4", "--workers", "2", "--address", "local",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert foreign_lines(result.stderr) == [], result.stderr  # no TensorFlow import notices, no Ray lines

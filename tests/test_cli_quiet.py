"""TensorFlow commands are quiet by default (no CUDA probe errors, oneDNN notices or
matplotlib font-cache lines); --verbose shows what the libraries say."""

from __future__ import annotations

import os
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

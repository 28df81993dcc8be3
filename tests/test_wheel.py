"""The package as a user installs it: a wheel built from the checkout (`make wheel`) goes
into a fresh virtual environment without extras (no TensorFlow) and `marsedge-run`
segments a frame with the bundled model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, save_png

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    # without PYTHONPATH: the installed package must run, not the checkout
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env, **kwargs)


@pytest.mark.slow
def test_wheel_installs_without_extras_and_segments_a_frame(tmp_path):
    source = tmp_path / "src"  # what the wheel is built from, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "marsedge", source / "marsedge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"), str(source)]
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "deprecat" not in (built.stdout + built.stderr).lower()  # e.g. project.license as a table
    (wheel,) = (tmp_path / "dist").glob("marsedge-*.whl")

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", str(wheel)])
    if installed.returncode != 0 and "No matching distribution" in installed.stderr + installed.stdout:
        pytest.skip("the package index is not reachable: " + installed.stderr.strip().splitlines()[-1])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "deprecat" not in installed.stderr.lower() and "license" not in installed.stderr.lower(), installed.stderr

    # nothing heavy came with it, and the checkout is not what runs
    probe = "import importlib.util as u, marsedge; print(u.find_spec('tensorflow') is None, marsedge.__file__)"
    checked = _run([str(python), "-c", probe], cwd=tmp_path)
    no_tensorflow, location = checked.stdout.split()
    assert no_tensorflow == "True" and str(venv) in location and str(ROOT) not in location

    sample = (
        min(SAMPLES.glob("*.png"))
        if SAMPLES.is_dir() and any(SAMPLES.glob("*.png"))
        else save_png(tmp_path / "frame.png", np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8))
    )
    result = _run(
        [str(venv / "bin" / "marsedge-run"), str(sample), "--out", str(tmp_path / "out"), "--json"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    assert record["model"]["name"] == "marsedge-bundled-int8-qat"
    assert Path(record["outputs"]["mask"]).is_file() and sum(record["class_fractions"].values()) == pytest.approx(1)

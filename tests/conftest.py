"""Shared fixtures: the tiny trained test models and golden data in tests/data.

tests/data is written only by `python tools/make_test_model.py`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str):
    """Import ``tools/NAME.py`` (a script folder, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_int8() -> Path:
    return DATA / "tiny_int8.tflite"


@pytest.fixture(scope="session")
def tiny_float32() -> Path:
    return DATA / "tiny_float32.tflite"


@pytest.fixture(scope="session")
def segmenter(tiny_int8):
    """One int8 Segmenter for the session (segment() is stateless between frames)."""
    from marsedge.edge_runtime import Segmenter

    return Segmenter(tiny_int8)


@pytest.fixture(scope="session")
def golden_frame() -> np.ndarray:
    """A 160x224 synthetic NavCam-like frame (larger than one tile)."""
    return np.array(Image.open(GOLDEN / "frame0.png"))


def save_png(path: Path, array: np.ndarray, **kwargs) -> Path:
    """Writes an array as an image file and returns its path."""
    Image.fromarray(array).save(path, **kwargs)
    return path


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fails a test that would hang, instead of hanging the suite."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

"""Timing one model through the edge runtime's own code path (:class:`Segmenter`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsedge.benchmarks.settings import BenchSettings
from marsedge.edge_runtime import Segmenter


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, min and percentiles of latency samples (ms)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std()), 4),
        "min": round(float(values.min()), 4),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "n": int(values.size),
    }


@dataclass
class SpeedRun:
    """Timings of one model at one thread count, raw samples kept for the log."""

    threads: int
    load_ms: float
    first_ms: float
    tile_ms: list[float]
    infer_ms: list[float]
    frame_ms: list[float]
    frame_tiles: int


def time_model(
    path: Path,
    threads: int,
    tile: np.ndarray,
    frame: np.ndarray | None,
    settings: BenchSettings,
    tta: bool = False,
) -> tuple[SpeedRun, Segmenter]:
    """Times one model through :class:`Segmenter` at one thread count; returns the segmenter too."""
    tick = time.perf_counter()
    segmenter = Segmenter(path, threads=threads, reference_kernels=settings.reference_kernels, tta=tta)
    load_ms = (time.perf_counter() - tick) * 1e3
    tile_ms, infer_ms = [], []
    with model_resolution(segmenter):
        tick = time.perf_counter()
        segmenter.segment(tile)
        first_ms = (time.perf_counter() - tick) * 1e3
        for _ in range(settings.warmup):
            segmenter.segment(tile)
        for _ in range(settings.runs):
            tick = time.perf_counter()
            result = segmenter.segment(tile)
            tile_ms.append((time.perf_counter() - tick) * 1e3)
            infer_ms.append(result.timings["infer"])
    frame_ms: list[float] = []
    frame_tiles = 0
    if frame is not None and settings.frame_runs:
        frame_tiles = segmenter.segment(frame).tiles  # untimed: first pass over the frame
        for _ in range(settings.frame_runs):
            tick = time.perf_counter()
            segmenter.segment(frame)
            frame_ms.append((time.perf_counter() - tick) * 1e3)
    return SpeedRun(threads, load_ms, first_ms, tile_ms, infer_ms, frame_ms, frame_tiles), segmenter


@contextlib.contextmanager
def model_resolution(segmenter: Segmenter) -> Iterator[Segmenter]:
    """Segments data-set tiles as they are: they are already at the model's resolution.

    The Segmenter resizes every whole frame to the model's ground resolution first
    (``model_pixels_per_frame`` over the frame's longer side); the labelled tiles were cut
    at model resolution (half-frames already reduced), so scoring and per-tile timing fix
    the resize at 1. Full frames keep the rule.
    """
    saved = segmenter.scale
    segmenter.scale = 1.0
    try:
        yield segmenter
    finally:
        segmenter.scale = saved

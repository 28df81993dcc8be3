"""The measurement behind ``marsedge bench``: every export of a run, side by side.

For each model: accuracy on the same labelled tiles (mean IoU over classes 1..4, IoU per
class, pixel agreement with the float reference), then through the edge runtime's own
code path (:class:`~marsedge.edge_runtime.Segmenter`, the path the rover runs) for each
thread count: load time, first inference, latency per tile and per full frame after
warm-up, FPS and GMAC/s (float models also as a share of the machine's measured float32
peak); peak resident memory of a separate runtime process; file size. The pieces live in
the modules listed in :mod:`marsedge.benchmarks`; this one runs them in order.

The Keras float model (``best.weights.h5`` of a run) is scored for accuracy only, as the
reference the exports are compared with: it never runs on the board. TensorFlow is
imported only for it, after every TFLite timing, so it cannot disturb them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from marsedge import __version__
from marsedge.benchmarks.machine import cpu_model, describe_machine
from marsedge.benchmarks.records import (
    _base_record,
    _keras_masks,
    _reference,
    _rss,
    _sample_record,
    _score,
    _speed_record,
    check_results,
)
from marsedge.benchmarks.settings import (
    DEFAULT_SPLIT,
    EXPORT_DIR,
    FORMAT_ORDER,
    INT8_FORMATS,
    SCHEMA,
    SPLITS,
    BenchError,
    BenchSettings,
    Progress,
    parse_size,
    parse_threads,
)
from marsedge.benchmarks.sources import Candidate, discover, evaluation_tiles
from marsedge.benchmarks.timing import SpeedRun, latency_stats, model_resolution, time_model
from marsedge.core.classes import CLASS_NAMES
from marsedge.core.metrics import SCORED_CLASSES
from marsedge.errors import MarsEdgeError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SPLIT",
    "EXPORT_DIR",
    "FORMAT_ORDER",
    "INT8_FORMATS",
    "SCHEMA",
    "SPLITS",
    "BenchError",
    "BenchResult",
    "BenchSettings",
    "Candidate",
    "Progress",
    "SpeedRun",
    "check_results",
    "cpu_model",
    "describe_machine",
    "discover",
    "evaluation_tiles",
    "latency_stats",
    "model_resolution",
    "parse_size",
    "parse_threads",
    "run_bench",
    "time_model",
]


@dataclass
class BenchResult:
    """The report (JSON-ready) and the raw samples behind it (for ``benchmarks.log``)."""

    report: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)


def run_bench(settings: BenchSettings, progress: Progress | None = None) -> BenchResult:
    """Measures every model named by ``settings``; see the module docstring.

    Raises:
        BenchError: no models or no labelled tiles.
        MarsEdgeError: a run directory or data file is broken.
        ModelError: a model cannot be loaded by the runtime.
    """
    started = datetime.now(timezone.utc)
    machine = describe_machine()  # before any work: the load average says what else ran
    candidates, runs = discover(settings)
    scored = evaluation_tiles(settings, runs, candidates)
    tiles, where = scored.tiles, scored.where
    tflites = [c for c in candidates if c.kind == "tflite"]
    keras_models = [c for c in candidates if c.kind == "keras"]
    steps = len(settings.threads) * (1 if settings.peak else 0) + len(keras_models)
    steps += sum(len(settings.threads) + 1 + (1 if settings.rss and not c.tta else 0) for c in tflites)
    done = 0

    def step(message: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, steps, message)
        done += 1

    peaks: dict[int, dict] = {}
    if settings.peak:
        from marsedge.benchmarks.peak import measure_peak

        for threads in settings.threads:
            step(f"machine peak, {threads} thread(s)")
            try:
                peaks[threads] = measure_peak(threads)
            except (RuntimeError, OSError, ValueError) as exc:
                logger.warning("%s; GMAC/s is reported without a peak", exc)

    frame = None
    if settings.frame_runs:
        frame = np.random.default_rng(0).integers(0, 256, settings.frame_size, dtype=np.uint8)
    records: dict[str, dict] = {}
    masks: dict[str, np.ndarray] = {}
    samples: list[dict[str, Any]] = []
    for candidate in tflites:
        record = _base_record(candidate)
        speed_runs = []
        for threads in settings.threads:
            step(f"{candidate.label}: speed at {threads} thread(s)")
            run, segmenter = time_model(candidate.path, threads, tiles.images[0], frame, settings, candidate.tta)
            speed_runs.append(run)
            samples.append(_sample_record(candidate.label, run))
        step(f"{candidate.label}: accuracy on {len(tiles)} tiles")
        with model_resolution(segmenter):
            masks[candidate.label] = np.stack([segmenter.segment(image).mask for image in tiles.images])
        del segmenter
        record["speed"] = [
            _speed_record(run, record["macs_per_tile"], peaks.get(run.threads), candidate.format) for run in speed_runs
        ]
        if settings.rss and not candidate.tta:  # the same interpreter: the same memory
            step(f"{candidate.label}: peak memory of a runtime process")
            record["rss"] = _rss(candidate.path, max(settings.threads), settings.frame_size, settings.reference_kernels)
        records[candidate.label] = record

    for candidate in keras_models:
        step(f"{candidate.label}: accuracy of the Keras float model")
        try:
            masks[candidate.label] = _keras_masks(candidate.run, tiles.images)
        except MarsEdgeError as exc:  # MissingExtraError: no TensorFlow on this machine
            logger.warning("skipping the Keras model: %s", exc)
            continue
        records[candidate.label] = _base_record(candidate)
    if progress is not None:
        progress(steps, steps, "done")

    ordered = [c for c in candidates if c.label in records]
    reference = _reference(ordered)
    float32 = next((c.label for c in ordered if c.format == "float32"), None)
    _score(records, masks, tiles.masks, reference, float32)

    report = {
        "schema": SCHEMA,
        "marsedge_version": __version__,
        "created": started.isoformat(timespec="seconds"),
        "command": settings.command(),
        "machine": machine,
        "peak": [peaks[t] for t in settings.threads if t in peaks],
        "settings": {
            "sources": list(settings.sources),
            "tiles_from": where,
            "tiles": len(tiles),
            "split": scored.split,
            "trained_tiles": scored.trained,
            "warning": scored.warning,
            "threads": list(settings.threads),
            "runs": settings.runs,
            "warmup": settings.warmup,
            "frame_size": list(settings.frame_size),
            "frame_runs": settings.frame_runs,
            "tile_size": list(tiles.images.shape[1:]),
            "kernels": "builtin reference" if settings.reference_kernels else "XNNPACK (default)",
        },
        "reference": reference,
        "float32": float32,
        "scored_classes": [CLASS_NAMES[c] for c in SCORED_CLASSES],
        "models": [records[c.label] for c in ordered],
    }
    if settings.frame_runs:  # whole frames of 256, 1024, 2048 px: the resize is part of the cost
        from marsedge.benchmarks.frames import frame_costs

        report["frames"] = frame_costs(
            [c.path for c in tflites if not c.tta], threads=max(settings.threads), runs=settings.frame_runs,
            rss=settings.rss, reference_kernels=settings.reference_kernels,
        )  # fmt: skip
    if settings.corruption_frames:
        report["corruptions"] = _corruptions(settings, [c for c in tflites if not c.tta])
    return BenchResult(report, samples)


def _corruptions(settings: BenchSettings, tflites: list[Candidate]) -> dict | None:
    """The corruption benchmark of the .tflite files on whole test frames: the first model's
    test split (its run's config, or the recipe its metadata names); models trained on
    another split are left out, with a warning."""
    from pathlib import Path

    from marsedge.benchmarks import corruptions

    if not settings.frames_data or not Path(settings.frames_data).is_dir():
        logger.warning("no corruption table: no folder of labelled whole frames (--frames-data)")
        return None
    if not tflites:
        return None

    def config_of(candidate: Candidate) -> Path | None:
        if candidate.run is not None:
            return Path(candidate.run.path) / "config.json"
        return corruptions.recipe_config(candidate.path)

    first, split = tflites[0], "all" if settings.split == "all" else "test"
    positions = corruptions.select_frames(
        first.path, settings.frames_data, split, config_of(first), settings.corruption_frames
    )
    models = {}
    for candidate in tflites:
        try:
            if split == "test":
                corruptions.split_frame_positions(candidate.path, config_of(first), settings.frames_data)
        except MarsEdgeError as exc:
            logger.warning("corruption table leaves out %s: %s", candidate.label, exc)
            continue
        models[candidate.label] = Path(candidate.path)
    report = corruptions.corruption_report(models, settings.frames_data, positions, threads=max(settings.threads))
    report["split"] = split
    return report

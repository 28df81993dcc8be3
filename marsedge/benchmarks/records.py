"""The JSON records of a benchmark report: one per model, its speed per thread count,
its accuracy against the float reference; and the ``--min-miou``/``--max-iou-drop`` checks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.benchmarks.settings import INT8_FORMATS
from marsedge.benchmarks.sources import Candidate
from marsedge.benchmarks.timing import SpeedRun, latency_stats
from marsedge.core.classes import CLASS_NAMES
from marsedge.core.metrics import confusion_matrix, iou_report, pixel_agreement
from marsedge.errors import UsageError

logger = logging.getLogger(__name__)


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), digits)


def _base_record(candidate: Candidate) -> dict[str, Any]:
    macs = None
    if candidate.kind == "tflite":
        from marsedge.benchmarks.ops import ProfileError, model_macs

        try:
            macs = model_macs(candidate.path) or None
        except ProfileError as exc:
            logger.warning("%s: MACs not counted from the graph: %s", candidate.path, exc)
    if macs is None and candidate.run is not None:
        macs = candidate.run.metrics().get("macs_per_tile")
    return {
        "label": candidate.label,
        "format": candidate.format,
        "kind": candidate.kind,
        "path": str(candidate.path),
        "size_kb": candidate.size_kb,
        "macs_per_tile": macs,
        "tta": candidate.tta,
        "speed": None,
        "rss": None,
    }


def _speed_record(run: SpeedRun, macs: int | None, peak: dict | None, fmt: str) -> dict[str, Any]:
    tile = latency_stats(run.tile_ms)
    infer = latency_stats(run.infer_ms)
    frame = latency_stats(run.frame_ms) if run.frame_ms else None
    gmacs = round(macs / infer["p50"] / 1e6, 2) if macs and infer["p50"] > 0 else None
    # a share of the measured float32 GEMM peak for float models only: there is no
    # measured int8 peak to hold int8 models against (see marsedge.benchmarks.peak)
    peak_gmacs = peak["float32_gmacs"] if peak and fmt not in INT8_FORMATS else None
    return {
        "threads": run.threads,
        "load_ms": round(run.load_ms, 3),
        "first_ms": round(run.first_ms, 3),
        "tile_ms": tile,
        "infer_ms": infer,
        "frame_ms": frame,
        "frame_tiles": run.frame_tiles or None,
        "fps": round(1000.0 / frame["mean"], 3) if frame else None,
        "tiles_per_s": round(1000.0 / tile["mean"], 1),
        "gmacs": gmacs,
        "peak_gmacs": peak_gmacs,
        "peak_fraction": round(gmacs / peak_gmacs, 4) if gmacs and peak_gmacs else None,
        "speedup_vs_float32": None,
    }


def _sample_record(label: str, run: SpeedRun) -> dict[str, Any]:
    return {
        "model": label,
        "threads": run.threads,
        "load_ms": round(run.load_ms, 3),
        "first_ms": round(run.first_ms, 3),
        "tile_ms": [round(v, 4) for v in run.tile_ms],
        "infer_ms": [round(v, 4) for v in run.infer_ms],
        "frame_ms": [round(v, 3) for v in run.frame_ms],
    }


def _speed_at(record: dict | None, threads: int) -> float | None:
    for speed in (record or {}).get("speed") or []:
        if speed["threads"] == threads:
            return speed["tile_ms"]["p50"]
    return None


def _rss(path: Path, threads: int, frame_size: tuple[int, int], reference_kernels: bool) -> dict | None:
    from marsedge.benchmarks.rss import measure_rss

    try:
        return measure_rss(str(path), threads, frame_size, reference_kernels)
    except (RuntimeError, OSError, ValueError) as exc:
        logger.warning("%s", exc)
        return None


def _reference(candidates: Sequence[Candidate]) -> str | None:
    """The float model others are compared with: Keras if scored, else the float32 export."""
    for fmt in ("keras", "float32"):
        for candidate in candidates:
            if candidate.format == fmt:
                return candidate.label
    return None


def _score(
    records: dict[str, dict],
    masks: dict[str, np.ndarray],
    truth: np.ndarray,
    reference: str | None,
    float32: str | None,
) -> None:
    """Adds accuracy (IoU, agreement and drop against ``reference``) and speed-up against
    ``float32`` to every record."""
    for label, record in records.items():
        report = iou_report(confusion_matrix(truth, masks[label]), CLASS_NAMES)
        record["accuracy"] = {
            "tiles": len(truth),
            "mean_iou": _round(report["mean_iou"]),
            "class_iou": {name: _round(value) for name, value in report["class_iou"].items()},
            "pixel_agreement": _round(pixel_agreement(masks[label], masks[reference])) if reference else None,
        }
    reference_miou = records[reference]["accuracy"]["mean_iou"] if reference else None
    for record in records.values():
        miou = record["accuracy"]["mean_iou"]
        known = reference_miou is not None and miou is not None
        record["accuracy"]["iou_drop"] = _round(reference_miou - miou) if known else None
        for speed in record.get("speed") or []:
            base = _speed_at(records.get(float32), speed["threads"]) if float32 else None
            speed["speedup_vs_float32"] = round(base / speed["tile_ms"]["p50"], 3) if base else None


def _keras_masks(run: Any, images: np.ndarray) -> np.ndarray:
    from marsedge.train.rundir import load_model
    from marsedge.train.trainer import predict_classes

    model = load_model(run)
    return predict_classes(model, images, run.output_classes)


def check_results(
    report: dict[str, Any], min_miou: float | None = None, max_iou_drop: float | None = None
) -> list[str]:
    """One line per model that falls short of ``min_miou`` or exceeds ``max_iou_drop``.

    Raises:
        BenchError: ``max_iou_drop`` is given but there is no float reference to drop from.
    """
    if max_iou_drop is not None and not report.get("reference"):
        raise UsageError("--max-iou-drop needs a float reference: the run's Keras model or a float32 export")
    failures = []
    for model in report["models"]:
        accuracy = model["accuracy"]
        miou, drop = accuracy["mean_iou"], accuracy["iou_drop"]
        if min_miou is not None and (miou is None or miou < min_miou):
            failures.append(f"{model['label']}: mIoU {_fmt(miou)} is below --min-miou {min_miou:g}")
        if max_iou_drop is not None and (drop is None or drop > max_iou_drop):
            failures.append(
                f"{model['label']}: mIoU {_fmt(miou)} is {_fmt(drop)} below {report['reference']}, "
                f"more than --max-iou-drop {max_iou_drop:g}"
            )
    return failures


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

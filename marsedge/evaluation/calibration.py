"""How far a model's confidence can be trusted on labelled tiles (``marsedge eval``).

The confidence of a pixel is the top softmax probability of its logits over the model's
temperature (``calibration.temperature`` in a .tflite's metadata, fitted on val by
``marsedge export``; 1 for older files and for a run directory's Keras model). Reported
for that temperature and for T = 1: the expected calibration error over 15 bins, the
accuracy of the pixels at confidence >= 0.9 and their share, and the bins of a
reliability diagram (:func:`marsedge.plots.reliability_png`). Labelled pixels only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marsedge.core.calibration import Reliability, confidence

CHUNK = 32  # tiles per Keras prediction


def tile_logits(model: Any, images: np.ndarray):
    """Yields float logits ``(H, W, C)`` per tile: a TileModel's own (int8 dequantised), or
    a Keras model's log-probabilities (the same softmax at any temperature)."""
    if hasattr(model, "float_logits"):
        for tile in images:
            yield model.float_logits(tile)
        return
    for start in range(0, len(images), CHUNK):
        for probabilities in model.probabilities(images[start : start + CHUNK]):
            yield np.log(np.maximum(probabilities, np.float32(1e-30)))


def calibration_report(model: Any, images: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """The calibration figures of ``model`` on uint8 tiles ``images`` with class-id masks
    ``truth``: ``temperature``, ``calibrated`` (at that temperature, with the reliability
    bins) and ``uncalibrated`` (T = 1)."""
    temperature = float(getattr(model, "temperature", 1.0))
    classes = np.asarray(model.output_classes, dtype=np.int64)
    calibrated, uncalibrated = Reliability(), Reliability()
    for logits, labels in zip(tile_logits(model, images), truth):
        labelled = labels != 0
        flat = logits[labelled]
        right = classes[flat.argmax(axis=-1)] == labels[labelled]
        calibrated.add(confidence(flat, temperature), right)
        uncalibrated.add(confidence(flat, 1.0), right)
    plain = uncalibrated.report()
    return {
        "temperature": temperature,
        "calibrated": calibrated.report(),
        "uncalibrated": {key: plain[key] for key in ("ece", "trusted_accuracy", "trusted_share", "mean_confidence")},
    }


def calibration_lines(calibration: dict[str, Any]) -> list[str]:
    """The calibration part of the ``marsedge eval`` report, a few lines."""
    after, before = calibration["calibrated"], calibration["uncalibrated"]

    def figures(report: dict[str, Any]) -> str:
        share, accuracy = report["trusted_share"], report["trusted_accuracy"]
        trusted = "no pixel" if not share else f"{100 * share:.1f}% of pixels, accuracy {100 * accuracy:.2f}%"
        return f"ECE {report['ece']:.4f}; confidence >= 0.9: {trusted}"

    return [
        f"calibration (labelled pixels, {after['bins']} bins): temperature {calibration['temperature']:.4g}",
        f"  calibrated     {figures(after)}",
        f"  T = 1          {figures(before)}",
    ]

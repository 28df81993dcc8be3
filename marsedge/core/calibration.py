"""Confidence from logits, fitting a softmax temperature, and calibration figures.

Numpy only: ``marsedge export`` fits the temperature on the val split and writes it to
the model metadata (``calibration.temperature``), the edge runtime divides the logits by
it before the softmax, and ``marsedge eval`` scores how well the confidence matches the
accuracy (expected calibration error over 15 equal-width bins, accuracy and share of the
pixels at confidence >= 0.9, a reliability diagram).

A pixel's confidence is the largest class probability of ``softmax(logits / T)``; only
labelled pixels (truth not class 0) count in the fit and the figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ECE_BINS = 15
TRUSTED_CONFIDENCE = 0.9  # the level the calibration report counts as trusted
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
DEFAULT_FIT_PIXELS = 2_000_000


def confidence(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The largest softmax probability of ``logits / temperature`` over the last axis, float32."""
    scaled = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    # One class plane at a time: numpy reduces a short last axis slowly (6x at 4 classes).
    planes = [scaled[..., c] for c in range(scaled.shape[-1])]
    top = planes[0].copy()
    for plane in planes[1:]:
        np.maximum(top, plane, out=top)
    total = np.zeros(top.shape, dtype=np.float32)
    for plane in planes:
        total += np.exp(plane - top)
    # the largest term is exp(0) = 1 after the shift, so the top probability is 1 / sum
    return np.float32(1.0) / total


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of channel ``labels`` (N,) under ``softmax(logits / T)`` (N, C)."""
    scaled = logits.astype(np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_sum - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``.

    Args:
        logits: (N, C) float logits of labelled pixels.
        labels: (N,) channel index (0..C-1) of each pixel's true class.

    A golden-section search over log T in [0.05, 20] (the likelihood is convex in 1/T).

    Raises:
        ValueError: no pixels, or shapes that do not match.
    """
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or not len(labels):
        raise ValueError(f"need (N, C) logits and (N,) labels with N > 0, got {logits.shape} and {labels.shape}")
    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (negative_log_likelihood(logits, labels, math.exp(x)) for x in (a, b))
    for _ in range(40):  # the bracket shrinks to 0.618^40 of ~6: far below any useful precision
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(logits, labels, math.exp(b))
    return round(math.exp((low + high) / 2), 4)


@dataclass
class PixelSample:
    """Labelled pixels' logits gathered tile by tile, at most ``limit`` of them (a seeded,
    even share of each tile's labelled pixels), for fitting a temperature."""

    output_classes: np.ndarray
    expected_pixels: int
    limit: int = DEFAULT_FIT_PIXELS
    seed: int = 0
    logits: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._keep = min(1.0, self.limit / max(self.expected_pixels, 1))
        # truth class id -> output channel, -1 for classes the model does not predict
        self._channel = np.full(256, -1, dtype=np.int64)
        self._channel[np.asarray(self.output_classes, dtype=np.int64)] = np.arange(len(self.output_classes))

    def add(self, logits: np.ndarray, truth: np.ndarray) -> None:
        """Adds one tile: ``logits`` (H, W, C) float, ``truth`` (H, W) class ids."""
        channels = self._channel[np.asarray(truth, dtype=np.int64).ravel()]
        chosen = channels >= 0
        if self._keep < 1.0:
            chosen &= self._rng.random(chosen.shape) < self._keep
        self.logits.append(logits.reshape(-1, logits.shape[-1])[chosen].astype(np.float32))
        self.labels.append(channels[chosen])

    def fit(self) -> dict[str, Any]:
        """The fitted temperature and the val likelihood before and after, as the metadata records it.

        Raises:
            ValueError: no labelled pixels were added.
        """
        logits = np.concatenate(self.logits) if self.logits else np.zeros((0, len(self.output_classes)), np.float32)
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)
        temperature = fit_temperature(logits, labels)
        return {
            "temperature": temperature,
            "fitted_on": "val",
            "pixels": int(len(labels)),
            "nll_before": round(negative_log_likelihood(logits, labels, 1.0), 5),
            "nll_after": round(negative_log_likelihood(logits, labels, temperature), 5),
        }


class Reliability:
    """Calibration figures accumulated pixel by pixel: per confidence bin (``bins`` equal
    widths over [0, 1]) the pixels, their summed confidence and how many were right."""

    def __init__(self, bins: int = ECE_BINS) -> None:
        self.bins = bins
        self.count = np.zeros(bins, dtype=np.int64)
        self.confidence_sum = np.zeros(bins, dtype=np.float64)
        self.correct = np.zeros(bins, dtype=np.int64)
        self.trusted = 0  # pixels at confidence >= TRUSTED_CONFIDENCE
        self.trusted_correct = 0

    def add(self, confidences: np.ndarray, correct: np.ndarray) -> None:
        """Adds pixels: their confidence (0..1) and whether their predicted class is the truth."""
        conf = np.asarray(confidences, dtype=np.float64).ravel()
        right = np.asarray(correct, dtype=bool).ravel()
        index = np.minimum((conf * self.bins).astype(np.int64), self.bins - 1)
        self.count += np.bincount(index, minlength=self.bins)
        self.confidence_sum += np.bincount(index, weights=conf, minlength=self.bins)
        self.correct += np.bincount(index, weights=right, minlength=self.bins).astype(np.int64)
        trusted = conf >= TRUSTED_CONFIDENCE
        self.trusted += int(trusted.sum())
        self.trusted_correct += int(right[trusted].sum())

    def report(self) -> dict[str, Any]:
        """ECE, accuracy, mean confidence, accuracy and share at confidence >= 0.9, and the bins."""
        total = int(self.count.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = self.correct / self.count
            mean_conf = self.confidence_sum / self.count
        gaps = np.where(self.count > 0, np.abs(accuracy - mean_conf), 0.0)
        return {
            "pixels": total,
            "bins": self.bins,
            "ece": float((gaps * self.count).sum() / total) if total else None,
            "accuracy": float(self.correct.sum() / total) if total else None,
            "mean_confidence": float(self.confidence_sum.sum() / total) if total else None,
            "trusted_confidence": TRUSTED_CONFIDENCE,
            "trusted_accuracy": self.trusted_correct / self.trusted if self.trusted else None,
            "trusted_share": self.trusted / total if total else None,
            "reliability": [
                {
                    "low": i / self.bins,
                    "high": (i + 1) / self.bins,
                    "pixels": int(self.count[i]),
                    "confidence": None if not self.count[i] else float(mean_conf[i]),
                    "accuracy": None if not self.count[i] else float(accuracy[i]),
                }
                for i in range(self.bins)
            ],
        }


def calibrate_tiles(
    logits_of: Callable[[np.ndarray], np.ndarray],
    output_classes: Sequence[int],
    images: np.ndarray,
    truth: np.ndarray,
    limit: int = DEFAULT_FIT_PIXELS,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Runs every tile once: its predicted mask, and a temperature fitted on the labelled
    pixels (what ``marsedge export`` writes as ``calibration`` in the metadata, with the
    expected calibration error of those pixels before and after).

    Args:
        logits_of: float logits ``(H, W, C)`` of one uint8 tile.
        output_classes: class id of each output channel.
        images, truth: uint8 tiles ``(N, H, W)`` and their class-id masks.

    Raises:
        ValueError: no labelled pixel among the tiles.
    """
    classes = np.asarray(output_classes, dtype=np.uint8)
    sample = PixelSample(classes, int(np.count_nonzero(truth)), limit, seed)
    masks = np.empty(images.shape, dtype=np.uint8)
    for index, tile in enumerate(images):
        logits = logits_of(tile)
        masks[index] = classes[np.argmax(logits, axis=-1)]
        sample.add(logits, truth[index])
    calibration = sample.fit()
    logits, labels = np.concatenate(sample.logits), np.concatenate(sample.labels)
    for key, temperature in (("ece_before", 1.0), ("ece_after", calibration["temperature"])):
        reliability = Reliability()
        reliability.add(confidence(logits, temperature), logits.argmax(axis=-1) == labels)
        calibration[key] = round(reliability.report()["ece"], 5)
    return masks, calibration

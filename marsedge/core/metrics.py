"""Segmentation metrics on a confusion matrix: the one place for the IoU maths.

Numpy only; used by training, export, evaluation, benchmarks and the tools.
"""
from __future__ import annotations

import numpy as np

from .classes import CLASS_NAMES

NUM_CLASSES = len(CLASS_NAMES)
SCORED_CLASSES = (1, 2, 3, 4)


def confusion_matrix(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int = NUM_CLASSES, ignore: tuple[int, ...] = (0,)
) -> np.ndarray:
    """Pixel confusion matrix ``cm[true, predicted]``; pixels whose truth is in ``ignore`` are skipped."""
    truth = np.asarray(truth).ravel().astype(np.int64)
    prediction = np.asarray(prediction).ravel().astype(np.int64)
    if truth.shape != prediction.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {prediction.size}")
    keep = np.ones(truth.shape, dtype=bool)
    for cls in ignore:
        keep &= truth != cls
    index = truth[keep] * num_classes + np.clip(prediction[keep], 0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU per class, ``TP / (TP + FP + FN)``; NaN for a class absent from truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: np.ndarray, classes: tuple[int, ...] = SCORED_CLASSES) -> float:
    """Mean IoU over ``classes`` (classes 1..4 by default), skipping classes that never occur."""
    values = class_iou(cm)[list(classes)]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def pixel_agreement(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Share of pixels where two predicted masks agree (optionally only where ``valid``)."""
    same = np.asarray(a) == np.asarray(b)
    if valid is not None:
        same = same[np.asarray(valid, dtype=bool)]
    return float(same.mean()) if same.size else float("nan")


def iou_report(cm: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """JSON-ready summary: mean IoU (classes 1..4), per-class IoU and the matrix."""
    ious = class_iou(cm)
    return {
        "mean_iou": mean_iou(cm),
        "class_iou": {
            class_names[c]: (None if np.isnan(ious[c]) else float(ious[c])) for c in SCORED_CLASSES
        },
        "confusion_matrix": np.asarray(cm).astype(int).tolist(),
    }


def score(truth: np.ndarray, prediction: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """IoU report of ``prediction`` against ``truth`` (class 0 ignored), plus pixel agreement
    with a ``reference`` prediction over all pixels when given."""
    report = iou_report(confusion_matrix(truth, prediction), CLASS_NAMES)
    if reference is not None:
        report["agreement"] = pixel_agreement(prediction, reference)
    return report


def tile_confusions(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """``(N, C, C)`` confusion matrix of each tile; unlabelled (class 0) truth is skipped."""
    return np.stack([confusion_matrix(t, p) for t, p in zip(truth, prediction)])

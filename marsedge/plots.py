"""Pictures of a run and of an evaluation: ``curves.png`` (loss and val IoU per epoch) and
``confusion.png`` (where the pixels of each true class went).

Matplotlib (the ``[train]`` extra) is imported only when a plot is drawn, with the Agg
backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.core.atomic import atomic_path
from marsedge.core.classes import CLASS_NAMES
from marsedge.errors import MissingExtraError

CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion.png"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("train", "plotting", "matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def curves_png(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Training loss and validation mean IoU (and each class's IoU) per epoch.

    Args:
        history: rows of a run's history.csv (``epoch``, ``loss``, ``val_miou``, ``val_iou_<class>``...).
        path: the PNG to write (atomically).
    """
    plt = _pyplot()
    epochs = [_number(row.get("epoch")) for row in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    left.plot(epochs, [_number(row.get("loss")) for row in history], marker=".", color="tab:red")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.plot(epochs, [_number(row.get("val_miou")) for row in history], marker=".", color="black", label="mean IoU")
    for name in CLASS_NAMES[1:]:
        values = [_number(row.get(f"val_iou_{name}")) for row in history]
        if not all(np.isnan(values)):
            right.plot(epochs, values, linewidth=0.8, alpha=0.7, label=name)
    right.set(xlabel="epoch", ylabel="IoU", title="validation IoU")
    right.legend(fontsize=7, loc="lower right")
    for axes in (left, right):
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _save(plt, figure, path)


def confusion_png(matrix: Any, path: str | Path, class_names: Sequence[str] = CLASS_NAMES, title: str = "") -> Path:
    """The confusion matrix (rows: truth, columns: prediction), each row as shares of its
    true class, with the pixel counts written in the cells; unlabeled truth is left out.

    Args:
        matrix: ``(C, C)`` pixel counts, ``matrix[true, predicted]``.
        path: the PNG to write (atomically).
    """
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    names = list(class_names)
    rows = [i for i in range(len(names)) if i != 0]  # class 0: ignored as truth
    counts = counts[rows]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(1.2 * len(names) + 1.5, 0.9 * len(rows) + 1.5), dpi=100)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_yticks(range(len(rows)), [names[i] for i in rows])
    axes.set(xlabel="prediction", ylabel="truth", title=title or "confusion (row shares, pixel counts)")
    for r in range(len(rows)):
        for c in range(len(names)):
            colour = "white" if shares[r, c] > 0.5 else "black"
            axes.text(
                c, r, f"{shares[r, c]:.0%}\n{int(counts[r, c]):,}", ha="center", va="center", fontsize=7, color=colour
            )
    figure.tight_layout()
    return _save(plt, figure, path)


def reliability_png(calibration: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Reliability diagram of a ``marsedge eval`` calibration report: accuracy against mean
    confidence per bin (the diagonal is perfect calibration), and the share of pixels per bin.
    """
    plt = _pyplot()
    report = calibration["calibrated"]
    bins = report["reliability"]
    width = 1.0 / report["bins"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.8, 5.6), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(centres, [b["accuracy"] or 0.0 for b in bins], width=width * 0.9, color="tab:blue", label="accuracy")
    top.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--", label="perfect calibration")
    top.plot(
        [b["confidence"] for b in bins if b["pixels"]],
        [b["accuracy"] for b in bins if b["pixels"]],
        marker=".", color="tab:red", linewidth=0.8, label="accuracy at the bin's mean confidence",
    )  # fmt: skip
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    top.set_title(
        f"{title}\nT = {calibration['temperature']:.3g}, ECE {report['ece']:.4f} "
        f"(T = 1: {calibration['uncalibrated']['ece']:.4f})",
        fontsize=9,
    )
    top.legend(fontsize=7, loc="upper left")
    total = max(report["pixels"], 1)
    bottom.bar(centres, [b["pixels"] / total for b in bins], width=width * 0.9, color="tab:gray")
    bottom.set(xlabel="confidence", ylabel="share of pixels")
    return _save(plt, figure, path)


def _save(plt, figure, path: str | Path) -> Path:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
    return Path(path)

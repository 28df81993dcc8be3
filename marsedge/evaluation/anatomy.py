"""Where a model's remaining errors are (``marsedge eval --anatomy``).

Three readings of one prediction on labelled tiles:

- errors by distance to a label boundary: the share of labelled pixels within ``r`` pixels
  of another label (class 0 included), their error rate, and the mean IoU with that band
  left out (how much of the gap is where annotators drew the line);
- big rock: recall, precision, and which class its missed and its false pixels belong to;
- the top and bottom tile of each frame (tiles ``2i`` and ``2i+1`` of the AN2DL file)
  scored apart, when the tiles come in such pairs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from marsedge.core.classes import BIG_ROCK, CLASS_NAMES
from marsedge.core.metrics import confusion_matrix, iou_report

BANDS = (1, 2, 3)


def interior(masks: np.ndarray, radius: int) -> np.ndarray:
    """True where every label within ``radius`` pixels (a square window, edges clamped) is the pixel's own."""
    height, width = masks.shape[1:]
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    same = np.ones(masks.shape, bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            same &= padded[:, dy : dy + height, dx : dx + width] == masks
    return same


def boundary_rows(masks: np.ndarray, prediction: np.ndarray, bands=BANDS) -> list[dict]:
    """One row per band radius: labelled share near a boundary, error rates, mIoU without the band."""
    labelled = masks > 0
    wrong = (prediction != masks) & labelled
    rows = []
    for radius in bands:
        inner = interior(masks, radius) & labelled
        near = labelled & ~inner
        report = iou_report(confusion_matrix(np.where(inner, masks, 0), prediction), CLASS_NAMES)
        rows.append({
            "radius": radius,
            "near_share": float(near.sum() / max(labelled.sum(), 1)),
            "error_near": float(wrong[near].sum() / max(near.sum(), 1)),
            "error_inner": float(wrong[inner].sum() / max(inner.sum(), 1)),
            "errors_near_share": float(wrong[near].sum() / max(wrong.sum(), 1)),
            "miou_without_band": report["mean_iou"],
            "big_rock_without_band": report["class_iou"]["big_rock"],
        })  # fmt: skip
    return rows


def big_rock_row(masks: np.ndarray, prediction: np.ndarray) -> dict:
    """Recall and precision of big rock on labelled pixels, and the classes its errors involve."""
    cm = confusion_matrix(masks, prediction)
    hits = int(cm[BIG_ROCK, BIG_ROCK])
    missed = {CLASS_NAMES[c]: int(cm[BIG_ROCK, c]) for c in range(1, len(CLASS_NAMES)) if c != BIG_ROCK}
    false = {CLASS_NAMES[c]: int(cm[c, BIG_ROCK]) for c in range(1, len(CLASS_NAMES)) if c != BIG_ROCK}
    return {
        "recall": hits / max(hits + sum(missed.values()), 1),
        "precision": hits / max(hits + sum(false.values()), 1),
        "missed_as": missed,
        "false_from": false,
    }


def halves(masks: np.ndarray, prediction: np.ndarray, indices: np.ndarray) -> dict[str, dict]:
    """IoU reports of the top (even index) and bottom (odd index) tiles of the frames."""
    return {
        name: iou_report(confusion_matrix(masks[indices % 2 == parity], prediction[indices % 2 == parity]), CLASS_NAMES)
        for name, parity in (("top", 0), ("bottom", 1))
    }


def anatomy(masks: np.ndarray, prediction: np.ndarray, indices: np.ndarray, paired: bool) -> dict[str, Any]:
    """All three readings as one JSON-ready dict (``halves`` only when ``paired``: tiles
    ``2i`` and ``2i+1`` of the data file are the top and bottom of one frame)."""
    result: dict[str, Any] = {
        "boundary": boundary_rows(masks, prediction),
        "big_rock": big_rock_row(masks, prediction),
    }
    if paired:
        result["halves"] = halves(masks, prediction, np.asarray(indices))
    return result


def anatomy_markdown(result: dict[str, Any]) -> str:
    """The readings of :func:`anatomy` as Markdown tables."""
    lines = [
        "| boundary band (px) | labelled px in band | error in band | error elsewhere | errors in band "
        "| mIoU without band | big rock without band |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["boundary"]:
        rock = row["big_rock_without_band"]
        lines.append(
            f"| {row['radius']} | {row['near_share']:.1%} | {row['error_near']:.1%} | {row['error_inner']:.1%} "
            f"| {row['errors_near_share']:.0%} | {row['miou_without_band']:.4f} | {'-' if rock is None else f'{rock:.3f}'} |"
        )
    rock = result["big_rock"]
    lines.append(
        f"\nbig rock: recall {rock['recall']:.3f}, precision {rock['precision']:.3f}; "
        f"missed pixels predicted as {rock['missed_as']}; false big rock on {rock['false_from']}"
    )
    if "halves" in result:
        lines += ["", "| tiles | mIoU | " + " | ".join(CLASS_NAMES[1:]) + " |", "|---" * (len(CLASS_NAMES) + 1) + "|"]
        for name, report in result["halves"].items():
            cells = " | ".join("-" if report["class_iou"][c] is None else f"{report['class_iou'][c]:.3f}" for c in CLASS_NAMES[1:])
            lines.append(f"| {name} | {report['mean_iou']:.4f} | {cells} |")
    return "\n".join(lines)

"""Where a model's remaining errors are: label boundaries, big rock, the halves of a frame.

    python tools/error_anatomy.py marsedge/edge_runtime/models/marsedge_int8.tflite \
        --config configs/marsedge_navcam.json --split val

Runs a .tflite through the edge runtime on a split of the data that ``--config`` (a config
file, or a run directory's ``config.json``) defines, and prints three small tables:

- errors by distance to a label boundary: the share of labelled pixels within ``r`` pixels
  of another label (class 0 included), their error rate, and the mean IoU with that band
  left out (how much of the gap is where annotators drew the line);
- big rock: recall, precision, and which class its missed and its false pixels belong to;
- the top and bottom tile of each NavCam frame (tiles ``2i`` and ``2i+1``) scored apart.

Chooses nothing (a reading of the model, like tools/robustness_eval.py). Needs the train
extra (to rebuild the split).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from marsedge.train.data import CLASS_NAMES
from marsedge.train.metrics import confusion_matrix, iou_report

BIG_ROCK = 4
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
        })
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


def _config(path: Path):
    from marsedge.train import rundir
    from marsedge.train.config import TrainConfig

    return rundir.read_run(path, need_weights=False).config if path.is_dir() else TrainConfig.load(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--config", type=Path, required=True, help="config file or run directory defining the split")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    args = parser.parse_args()

    from marsedge.export.evaluate import TFLiteTileModel
    from marsedge.train.trainer import compute_split

    tiles, split, _, _ = compute_split(_config(args.config))
    indices = split[args.split]
    masks = tiles.masks[indices]
    prediction = TFLiteTileModel.from_file(args.model).predict_masks(tiles.images[indices])
    overall = iou_report(confusion_matrix(masks, prediction), CLASS_NAMES)
    print(f"{args.model} on {args.split} ({len(indices)} tiles): mIoU {overall['mean_iou']:.4f}\n")
    print("| boundary band (px) | labelled px in band | error in band | error elsewhere | errors in band "
          "| mIoU without band | big rock without band |")
    print("|---|---|---|---|---|---|---|")
    for row in boundary_rows(masks, prediction):
        print(f"| {row['radius']} | {row['near_share']:.1%} | {row['error_near']:.1%} | {row['error_inner']:.1%} "
              f"| {row['errors_near_share']:.0%} | {row['miou_without_band']:.4f} | {row['big_rock_without_band']:.3f} |")
    rock = big_rock_row(masks, prediction)
    print(f"\nbig rock: recall {rock['recall']:.3f}, precision {rock['precision']:.3f}; "
          f"missed pixels predicted as {rock['missed_as']}; false big rock on {rock['false_from']}\n")
    print("| tiles | mIoU | " + " | ".join(CLASS_NAMES[1:]) + " |")
    print("|---" * (2 + len(CLASS_NAMES) - 1) + "|")
    for name, report in halves(masks, prediction, indices).items():
        cells = " | ".join(f"{report['class_iou'][c]:.3f}" for c in CLASS_NAMES[1:])
        print(f"| {name} | {report['mean_iou']:.4f} | {cells} |")


if __name__ == "__main__":
    main()

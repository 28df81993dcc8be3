"""How far apart two runs really are: a paired bootstrap over NavCam frames.

    python tools/paired_bootstrap.py runs/teachers/full_res_16_distilled runs/marsedge_navcam --split val test
    python tools/paired_bootstrap.py runs/teachers/full_res_16_distilled runs/marsedge_navcam --export marsedge_qat.tflite

Scores the Keras float model of each run (or, with ``--export NAME``, each run's
``export/NAME``, e.g. the QAT int8 file) on the split, tile by tile, then draws whole
frames (tiles 2i and 2i+1 are the two halves of one frame, and splits keep them together)
with replacement and recomputes every run's mean IoU (classes 1..4) on the same draw.
For each run after the first it prints the difference to the first run, its 95% interval
over the draws and how often the run came out ahead. A difference whose interval holds 0
cannot be told from which frames happened to land in the split. Needs the train extra.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from marsedge.train.metrics import confusion_matrix, mean_iou


def tile_confusions(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """``(N, C, C)`` confusion matrix of each tile; unlabelled (class 0) truth is skipped."""
    return np.stack([confusion_matrix(t, p) for t, p in zip(truth, prediction)])


def bootstrap(confusions: list[np.ndarray], groups: np.ndarray, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Mean IoU of each model on ``resamples`` draws of whole groups: ``(resamples, models)``.

    Args:
        confusions: per model, the ``(N, C, C)`` tile confusions on the same N tiles.
        groups: ``(N,)`` group (frame) id of each tile; a draw takes groups, not tiles.
    """
    _, group_of_tile = np.unique(groups, return_inverse=True)
    count = group_of_tile.max() + 1
    per_group = [np.stack([cm[group_of_tile == g].sum(axis=0) for g in range(count)]) for cm in confusions]
    rng = np.random.default_rng(seed)
    scores = np.empty((resamples, len(confusions)))
    for draw in range(resamples):
        weights = np.bincount(rng.integers(0, count, count), minlength=count)
        for model, frames in enumerate(per_group):
            scores[draw, model] = mean_iou(np.tensordot(weights, frames, axes=1))
    return scores


def compare(confusions: list[np.ndarray], groups: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Each model against the first: its mIoU, the difference, 95% interval, share of draws ahead."""
    scores = bootstrap(confusions, groups, resamples, seed)
    base = mean_iou(confusions[0].sum(axis=0))
    rows = []
    for model in range(len(confusions)):
        delta = scores[:, model] - scores[:, 0]
        score = mean_iou(confusions[model].sum(axis=0))
        low, high = np.quantile(delta, [0.025, 0.975])
        rows.append({"miou": score, "delta": score - base, "low": float(low), "high": float(high),
                     "ahead": float((delta > 0).mean())})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="the first run is the baseline")
    parser.add_argument("--split", nargs="+", default=["val"], choices=("val", "test"))
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", metavar="NAME", help="score RUN/export/NAME (a .tflite) instead of the Keras model")
    args = parser.parse_args(argv)

    from marsedge.export.evaluate import KerasTileModel, TFLiteTileModel
    from marsedge.train import rundir
    from marsedge.train.data import file_sha256
    from marsedge.train.distill import check_same_split

    runs = [rundir.read_run(path) for path in args.runs]
    indices, data_hash = rundir.split_indices(runs[0]), file_sha256(runs[0].config.data)
    for run in runs[1:]:
        check_same_split(run, indices, data_hash)  # the comparison is paired: same tiles
    if args.export:
        files = [run.path / "export" / args.export for run in runs]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise SystemExit(f"error: not exported: {', '.join(missing)} (run `marsedge export RUN --int8` first)")
        models = [TFLiteTileModel(path.read_bytes(), run.output_classes) for path, run in zip(files, runs)]
    else:
        models = [KerasTileModel(rundir.load_model(run), run.output_classes, run.input_shape) for run in runs]
    print(f"| split | run | mIoU | Δ vs {runs[0].path.name} | 95% interval of Δ | draws ahead |")
    print("|---|---|---|---|---|---|")
    for split in args.split:
        tiles = rundir.split_tiles(runs[0], split)
        groups = indices[split] // 2
        confusions = [tile_confusions(tiles.masks, model.predict_masks(tiles.images)) for model in models]
        for run, row in zip(runs, compare(confusions, groups, args.resamples, args.seed)):
            print(f"| {split} | {run.path.name} | {row['miou']:.4f} | {row['delta']:+.4f} | "
                  f"{row['low']:+.4f} .. {row['high']:+.4f} | {row['ahead']:.0%} |")


if __name__ == "__main__":
    main()

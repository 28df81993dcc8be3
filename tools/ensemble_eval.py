"""Score runs, alone and averaged, with and without flip averaging, on a split of their data.

    python tools/ensemble_eval.py runs/teachers/half_res_24 runs/teachers/half_res_32 --split val

What a set of teacher runs would hand a student (``marsedge train --teacher``): one row per
run and one for their average, each plain and flip-averaged (Keras float models). All runs
must share the data file and split; the first run's split is scored.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from marsedge.train import rundir
from marsedge.train.data import CLASS_NAMES, file_sha256
from marsedge.train.distill import check_same_split, ensemble_probabilities
from marsedge.train.metrics import confusion_matrix, iou_report


def rows(paths: list[Path], split: str) -> list[tuple[str, dict]]:
    runs = [rundir.read_run(path) for path in paths]
    tiles = rundir.split_tiles(runs[0], split)
    indices, data_hash = rundir.split_indices(runs[0]), file_sha256(runs[0].config.data)
    for run in runs[1:]:
        check_same_split(run, indices, data_hash)
    models = [rundir.load_model(run) for run in runs]
    classes = np.asarray(runs[0].output_classes, np.uint8)
    result = []
    members = [(run.path.name, [model]) for run, model in zip(runs, models)]
    if len(models) > 1:
        members.append(("average of " + " + ".join(run.path.name for run in runs), models))
    for name, group in members:
        for flips in (False, True):
            probs = ensemble_probabilities(group, tiles.images, flips=flips)
            report = iou_report(confusion_matrix(tiles.masks, classes[probs.argmax(-1)]), CLASS_NAMES)
            result.append((name + (" + flip TTA" if flips else ""), report))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--split", default="val", choices=("val", "test"))
    args = parser.parse_args()
    print(f"| {args.split} split | mIoU | " + " | ".join(CLASS_NAMES[1:]) + " |")
    print("|---" * (2 + len(CLASS_NAMES) - 1) + "|")
    for name, report in rows(args.runs, args.split):
        cells = " | ".join(f"{report['class_iou'][c]:.3f}" for c in CLASS_NAMES[1:])
        print(f"| {name} | {report['mean_iou']:.4f} | {cells} |")


if __name__ == "__main__":
    main()

"""How far apart models really are (``marsedge compare``): a paired bootstrap over frames.

Every model (run directory or .tflite) is scored on the same tiles, tile by tile. Whole
frames (tiles cut from one frame stay together, as the split keeps them) are then drawn
with replacement, and every model's mean IoU (classes 1..4) is recomputed on the same
draw. For each model the report gives the difference to the first, its 95% interval over
the draws and how often the model came out ahead: a difference whose interval holds 0
cannot be told from which frames happened to land in the split. With ``ensemble`` the
average of the models' class probabilities is scored as one more model (what a set of
teachers would hand a student through ``marsedge train --teacher``); with ``tta`` every
model predicts each tile and its mirror image, averaged (``marsedge-run --tta``).

Models that read whole frames at different fields of view (``frame_pixels`` 128 and 256)
are scored on the labels of the finest: every other model's mask is resized to it (nearest
neighbour), as the runtime resizes a mask back to the frame.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.core.classes import CLASS_NAMES
from marsedge.core.metrics import class_iou, mean_iou, tile_confusions
from marsedge.edge_runtime.errors import ImageError
from marsedge.errors import DataError, MarsEdgeError, UsageError
from marsedge.evaluation.evaluate import EvalTarget, load_target

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 2000


def bootstrap(
    confusions: list[np.ndarray], groups: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> np.ndarray:
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


def compare(
    confusions: list[np.ndarray], groups: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> list[dict]:
    """Each model against the first: its mIoU, the difference, 95% interval, share of draws ahead."""
    scores = bootstrap(confusions, groups, resamples, seed)
    base = mean_iou(confusions[0].sum(axis=0))
    rows = []
    for model in range(len(confusions)):
        delta = scores[:, model] - scores[:, 0]
        total = confusions[model].sum(axis=0)
        score = mean_iou(total)
        low, high = np.quantile(delta, [0.025, 0.975])
        ious = class_iou(total)
        rows.append({
            "miou": score, "delta": score - base, "low": float(low), "high": float(high),
            "ahead": float((delta > 0).mean()),
            "class_iou": {CLASS_NAMES[c]: None if np.isnan(ious[c]) else float(ious[c]) for c in range(1, len(CLASS_NAMES))},
        })  # fmt: skip
    return rows


def _check_paired(targets: list[EvalTarget], sources: list[str]) -> None:
    first = targets[0]
    for source, target in zip(sources[1:], targets[1:]):
        if not np.array_equal(target.indices, first.indices):
            raise DataError(
                f"{source}: its {target.split} split is not the tiles of {sources[0]}'s (use models trained on the "
                "same data and split, or --split all)"
            )


def _probabilities(target: EvalTarget, tta: bool) -> np.ndarray:
    """Class probabilities ``(N, H, W, C)`` of the target's tiles; with ``tta`` the sum
    over each tile and its left-right mirror (mirrored back), as ``marsedge-run --tta``."""
    images = target.tiles.images
    try:
        probs = target.model.probabilities(images)
        if tta:
            probs += target.model.probabilities(np.ascontiguousarray(images[:, :, ::-1]))[:, :, ::-1]
    except ImageError as exc:
        raise DataError(str(exc)) from None
    return probs


def _check_classes(targets: list[EvalTarget], sources: list[str]) -> None:
    classes = targets[0].model.output_classes
    for source, target in zip(sources[1:], targets[1:]):
        if not np.array_equal(target.model.output_classes, classes):
            raise MarsEdgeError(
                f"{source}: predicts classes {list(target.model.output_classes)}, {sources[0]} {list(classes)}"
            )


def compare_models(
    sources: list[str | Path],
    data: str | Path | None = None,
    split: str = "val",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    ensemble: bool = False,
    threads: int | None = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Paired bootstrap of ``sources`` (run directories or .tflite files) on the same tiles.

    Args:
        sources: the models; the first is the baseline.
        data: the labelled tiles; None: the data file of the first model's run.
        split: "all", or the runs' "train" / "val" / "test" split (all models must share it).
        resamples: bootstrap draws.
        seed: seed of the draws.
        ensemble: also score the average of the models' class probabilities.
        tta: score every model with test-time flip averaging (``marsedge-run --tta``).
        threads: interpreter threads for .tflite models.

    Raises:
        MarsEdgeError: a model or the data cannot be read, or the models do not share the tiles.
    """
    sources = [str(s) for s in sources]
    if len(sources) < 1:
        raise UsageError("give at least one run directory or .tflite")
    if resamples < 1:
        raise UsageError(f"resamples must be 1 or more, got {resamples}")
    if data is None:
        data = _default_data(sources)
    targets = [load_target(source, data, split, threads) for source in sources]
    _check_paired(targets, sources)
    # Models that read whole frames at other fields of view (128 and 256 model pixels) are
    # scored at the finest one: each mask resized (nearest) to those labels, as the runtime
    # resizes a mask back to the frame.
    finest = max(targets, key=lambda target: target.tiles.masks[0].size)
    truth = finest.tiles.masks
    names = list(sources)
    if ensemble and len(targets) > 1:
        if len({target.tiles.masks.shape for target in targets}) > 1:
            raise UsageError("--ensemble averages probabilities pixel by pixel: give models of one field of view")
        _check_classes(targets, sources)
    confusions, total = [], None
    for source, target in zip(sources, targets):
        log.info("scoring %s on %d tiles", source, len(target.tiles))
        if tta or ensemble:
            probs = _probabilities(target, tta)
            masks = target.model.output_classes[probs.argmax(axis=-1)]
            total = probs if total is None else total + probs
        else:
            masks = target.predict_masks()
        confusions.append(tile_confusions(truth, _at_size(masks, truth.shape[1:])))
    if ensemble and len(targets) > 1:
        names.append("average of " + " + ".join(Path(s).name for s in sources))
        confusions.append(tile_confusions(truth, targets[0].model.output_classes[total.argmax(axis=-1)]))
    groups = targets[0].groups
    rows = compare(confusions, groups, resamples, seed)
    kinds = [t.kind for t in targets] + (["ensemble"] if len(names) > len(targets) else [])
    return {
        "data": str(data),
        "split": split,
        "tiles": len(truth),
        "frames": int(len(np.unique(groups))),
        "resamples": resamples,
        "seed": seed,
        "tta": tta,
        "baseline": sources[0],
        "models": [{"model": name, "kind": kind, **row} for name, kind, row in zip(names, kinds, rows)],
    }


def _at_size(masks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(N, h, w)`` class masks at ``(N, *shape)``, nearest neighbour."""
    if masks.shape[1:] == tuple(shape):
        return masks
    from marsedge.edge_runtime.resample import resize_nearest

    return np.stack([resize_nearest(mask, *shape) for mask in masks])


def _default_data(sources: list[str]) -> Path:
    """The first model's run data, or the file a .tflite's split recipe names."""
    from marsedge.datapaths import model_data
    from marsedge.edge_runtime.segmenter import model_path

    found = model_data([model_path(source) for source in sources])
    return found if found is not None else _run_data(sources[0])


def _run_data(source: str) -> Path:
    from marsedge.evaluation.evaluate import source_run
    from marsedge.train import rundir

    path = Path(source)
    run_dir = path if path.is_dir() else source_run(path) if path.is_file() else None
    if run_dir is None:
        raise UsageError(f"{source}: no run directory to take the data file from; give --data")
    from marsedge.datapaths import run_data

    return run_data(run_dir) or Path(rundir.read_run(run_dir, need_weights=False).config.data)


def compare_markdown(report: dict[str, Any]) -> str:
    """The report of :func:`compare_models` as a Markdown table."""
    base = Path(report["baseline"]).name
    lines = [
        f"{report['split']} split of {report['data']}: {report['tiles']} tiles from {report['frames']} frames, "
        f"{report['resamples']} draws of whole frames" + (", flip-averaged predictions" if report.get("tta") else ""),
        "",
        f"| model | mIoU | Δ vs {base} | 95% interval of Δ | draws ahead | " + " | ".join(CLASS_NAMES[1:]) + " |",
        "|---" * (5 + len(CLASS_NAMES) - 1) + "|",
    ]
    for row in report["models"]:
        cells = " | ".join(
            "-" if row["class_iou"][c] is None else f"{row['class_iou'][c]:.3f}" for c in CLASS_NAMES[1:]
        )
        lines.append(
            f"| {row['model']} | {row['miou']:.4f} | {row['delta']:+.4f} | {row['low']:+.4f} .. {row['high']:+.4f} "
            f"| {row['ahead']:.0%} | {cells} |"
        )
    return "\n".join(lines)

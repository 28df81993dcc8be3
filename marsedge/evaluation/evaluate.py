"""Masks and IoU from a Keras run or a .tflite model on labelled tiles (``marsedge eval``).

Tile data sets (the AN2DL .npz, PNG tile folders) are at model resolution already (a
64x128 tile is half of a 256-px frame reduced 2x), so tiles are scored as they are, at
scale 1; whole camera frames go through the runtime's resize rule instead
(:func:`marsedge.benchmarks.frames.evaluate_frames`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.core.classes import CLASS_NAMES
from marsedge.core.metrics import score
from marsedge.edge_runtime.errors import ImageError, ModelError
from marsedge.errors import DataError, MarsEdgeError, RunDirError, UsageError
from marsedge.train.data import TileSet, file_sha256, frame_groups, load_tiles

log = logging.getLogger(__name__)

SPLITS = ("all", "train", "val", "test")


@dataclass(frozen=True)
class EvalTarget:
    """What ``marsedge eval`` measures: a model, the tiles and which split of them.

    ``indices`` are the tiles' positions in the data file; ``groups`` the frame each tile
    was cut from (tiles of one frame share a group), for resampling whole frames.
    ``trained_tiles``: how many of them the model trained on (None when its split is
    unknown); ``warning``: a line saying so when the score is not a held-out one.
    """

    kind: str  # "tflite" or "keras"
    model: Any  # TileModel or KerasTileModel: predict_masks, probabilities, output_classes
    tiles: TileSet
    split: str
    run_dir: Path | None
    indices: np.ndarray
    groups: np.ndarray
    trained_tiles: int | None = None  # how many of the tiles the model trained on; None: unknown
    warning: str | None = None  # labels a score that is not a held-out one

    def predict_masks(self) -> np.ndarray:
        """The model's class masks for the target's tiles.

        Raises:
            DataError: the tiles are not the model's input size.
        """
        try:
            return self.model.predict_masks(self.tiles.images)
        except ImageError as exc:
            raise DataError(str(exc)) from None


def source_run(model_path: Path) -> Path | None:
    """The run directory a .tflite came from, when its metadata names one that exists."""
    from marsedge.core.metadata import read_metadata

    try:
        source = read_metadata(model_path).get("source_run")
    except ModelError:
        return None
    return Path(source) if source and Path(source).is_dir() else None


def recipe_split(metadata: dict[str, Any], data: str | Path) -> tuple[TileSet, dict[str, np.ndarray]]:
    """The tiles of ``data`` and the train/val/test split a model's metadata describes.

    Recomputes the split from the ``split`` recipe (seed, fractions, cleaning: see
    :func:`marsedge.core.metadata.split_recipe`) as training did, and checks it against
    the model's ``source_split`` fingerprint when it carries one.

    Raises:
        MarsEdgeError: the model carries no recipe, or its split was inherited from
            another file that is not beside ``data``.
        DataError: ``data`` is not the file the model was trained on, or the recomputed
            split is not the one the model recorded.
    """
    from marsedge.core.metadata import SPLIT_SETTINGS, read_split_recipe

    try:
        recipe = read_split_recipe(metadata)
    except ModelError as exc:
        raise MarsEdgeError(str(exc)) from None
    if recipe is None:
        raise MarsEdgeError("the model's metadata carries no split recipe (exported before marsedge recorded it)")
    data = Path(data)
    digest = file_sha256(data)
    if digest != recipe["data_sha256"]:
        raise DataError(
            f"{data}: not the data this model was trained on ({recipe['data_file']}, sha256 "
            f"{recipe['data_sha256'][:12]}…, this file {digest[:12]}…), so its splits do not apply"
        )
    settings = {key: recipe.get(key, default) for key, default in SPLIT_SETTINGS.items()}
    if recipe.get("split_from"):  # whole frames split as the tile file cut from them: that file, beside data
        inherited = data.parent / recipe["split_from"]
        if not inherited.is_file():
            raise MarsEdgeError(
                f"the model's split was inherited from {recipe['split_from']}, which is not beside {data}: "
                "score it through its run directory"
            )
        settings["split_from"] = str(inherited)
    from marsedge.train.config import TrainConfig
    from marsedge.train.rundir import split_fingerprint
    from marsedge.train.trainer import compute_split

    tiles, split, _, _ = compute_split(TrainConfig(data=str(data), **settings))
    recorded = metadata.get("source_split")
    if isinstance(recorded, dict):
        mine = split_fingerprint(split, digest)
        differs = [name for name in ("train", "val", "test") if recorded.get(name) not in (None, mine[name])]
        if differs:
            raise DataError(
                f"{data}: the recomputed {', '.join(differs)} split differs from the one the model recorded "
                "(source_split); this marsedge splits the data differently from the one that trained it"
            )
    return tiles, split


def _run_split(run_dir: Path, data: Path) -> dict[str, np.ndarray] | None:
    """The run's split indices; None when ``data`` is not the run's data file."""
    from marsedge.train import rundir

    run = rundir.read_run(run_dir, need_weights=False)
    if run.data_sha256 and data.is_file() and file_sha256(data) != run.data_sha256:
        return None
    return rundir.split_indices(run)


def _run_frame_pixels(run_dir: Path | None, predictor: Any = None) -> int:
    """Model pixels across a whole frame: the run's ``frame_pixels``, else the field of view
    a .tflite records (``input.model_pixels_per_frame``), else 128."""
    if run_dir is None:
        from marsedge.core.metadata import FieldOfView

        metadata = getattr(predictor, "metadata", None)
        recorded = FieldOfView.from_metadata(metadata).model_pixels_per_frame if metadata else None
        return int(round(recorded)) if recorded else 128
    from marsedge.train import rundir

    return int(getattr(rundir.read_run(run_dir, need_weights=False).config, "frame_pixels", 128) or 128)


def trained_warning(trained: int | None, total: int, split: str, why: str = "") -> str | None:
    """The line that labels a score on tiles the model trained on (or may have)."""
    if trained is None:
        return f"cannot tell which of these tiles the model trained on ({why}): this may not be a held-out score"
    if trained:
        return (
            f"NOT A HELD-OUT SCORE: {trained} of these {total} tiles ({split}) are tiles the model trained on; "
            "use --split test for its held-out score"
        )
    return None


def model_splits(
    predictor: Any, run_dir: Path | None, data: Path
) -> tuple[TileSet | None, dict[str, np.ndarray] | None, str]:
    """The tiles (when already loaded), the train/val/test split a model was trained on
    when ``data`` is its data file, and why not otherwise.

    Known from its run directory, or from the split recipe a .tflite carries.
    """
    metadata = getattr(predictor, "metadata", None) or {}
    if run_dir is not None:
        return None, _run_split(run_dir, data), f"{data} is not the data file of run {run_dir}"
    recipe = metadata.get("split")
    if recipe is not None:
        if data.exists() and file_sha256(data) == recipe.get("data_sha256"):
            tiles, splits = recipe_split(metadata, data)
            return tiles, splits, ""
        return None, None, f"{data} is not {recipe.get('data_file')}, the model's training data"
    return None, None, "no run directory and no split recipe in the model's metadata"


def open_model(model: str | Path, threads: int | None = None) -> tuple[str, Any, Path | None]:
    """``(kind, model, run directory or None)`` for a .tflite file or a run directory.

    Raises:
        MarsEdgeError: missing or unreadable model (the message names it).
    """
    from marsedge.edge_runtime.segmenter import model_path

    path = model_path(model)  # a bundled model's name (navcam, navcam-robust, ...) names its file
    if path.is_dir():
        from marsedge.train.predict import KerasTileModel

        return "keras", KerasTileModel.from_run(path), path
    if path.is_file():
        from marsedge.edge_runtime.tile_model import TileModel

        try:
            predictor = TileModel.from_file(path, threads)
        except ModelError as exc:
            raise MarsEdgeError(f"{path}: {exc}") from None
        return "tflite", predictor, source_run(path)
    raise MarsEdgeError(f"{path}: no such model file or run directory")


def load_target(
    model: str | Path, data: str | Path, split: str | None = None, threads: int | None = None
) -> EvalTarget:
    """Open a model (.tflite file or run directory) and the tiles to evaluate it on.

    ``split`` None: the model's test split when its split is known (a run directory, a
    .tflite whose source run exists or whose metadata carries its split recipe) and
    ``data`` is the file it was trained on, else all tiles. A score on tiles the model
    trained on, or may have, carries a warning.

    Raises:
        MarsEdgeError: missing model, unreadable data, or a split that cannot apply.
    """
    if split is not None and split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    data = Path(data)
    kind, predictor, run_dir = open_model(model, threads)
    every, splits, why = model_splits(predictor, run_dir, data)
    if split is None:
        split = "test" if splits is not None and len(splits.get("test", ())) else "all"
    if split != "all" and splits is None:
        raise UsageError(
            f"--split {split} needs the model's run directory or its split recipe ({why}; a .tflite from "
            "`marsedge export` carries the recipe); use --split all"
        )
    if every is None:  # whole frames are read at the run's field of view (frame_pixels)
        every = load_tiles(data, _run_frame_pixels(run_dir, predictor))
    if split == "all":
        indices = np.arange(len(every))
    elif split not in splits:
        raise RunDirError(f"{run_dir or model}: no '{split}' split")
    else:
        indices = np.asarray(splits[split])
        if len(indices) and indices.max() >= len(every):
            raise DataError(f"{data}: has {len(every)} tiles but the model's split indexes {indices.max() + 1}+")
    if len(indices) == 0:
        raise DataError(f"{data}: no tiles in the {split} split")
    trained = None if splits is None else int(np.isin(indices, splits.get("train", ())).sum())
    groups = (frame_groups(every.images) if every.sources is None else np.arange(len(every)))[indices]
    warning = trained_warning(trained, len(indices), split, why)
    return EvalTarget(kind, predictor, every.subset(indices), split, run_dir, indices, groups, trained, warning)


def evaluate(
    model: str | Path,
    data: str | Path,
    split: str | None = None,
    threads: int | None = None,
    anatomy: bool = False,
    calibration: bool = True,
) -> dict[str, Any]:
    """Mean IoU, per-class IoU and confusion matrix of a model on labelled tiles.

    Args:
        model: a .tflite from ``marsedge export`` or a run directory (float Keras).
        data: AN2DL .npz or a folder of image/mask PNG pairs.
        split: "all" tiles, or the model's "train" / "val" / "test" split of its own data;
            None: "test" when the model's split is known, else "all".
        threads: interpreter threads for a .tflite.
        anatomy: add ``anatomy``, where the errors are (:mod:`marsedge.evaluation.anatomy`).
        calibration: add ``calibration``, how far the confidence can be trusted
            (:mod:`marsedge.evaluation.calibration`).

    Raises:
        MarsEdgeError: see :func:`load_target`; tiles of another size than the model's.
    """
    target = load_target(model, data, split, threads)
    prediction = target.predict_masks()
    report = report_for(target, prediction, model, data)
    if calibration:
        from marsedge.evaluation.calibration import calibration_report

        report["calibration"] = calibration_report(target.model, target.tiles.images, target.tiles.masks)
    if anatomy:
        from marsedge.evaluation.anatomy import anatomy as error_anatomy

        # tiles 2i and 2i+1 are the halves of one frame when the frame grouping pairs them
        pairs = np.array_equal(target.groups, target.indices // 2)
        paired = bool(pairs and len(np.unique(target.groups)) < len(target.groups))
        report["anatomy"] = error_anatomy(target.tiles.masks, prediction, target.indices, paired)
    return report


def report_for(target: EvalTarget, prediction: np.ndarray, model: str | Path, data: str | Path) -> dict[str, Any]:
    """The ``marsedge eval`` report of ``prediction`` on ``target``'s tiles."""
    return {
        "model": str(model),
        "kind": target.kind,
        "data": str(data),
        "split": target.split,
        "tiles": len(target.tiles),
        "trained_tiles": target.trained_tiles,
        "warning": target.warning,
        "class_names": list(CLASS_NAMES),
        **score(target.tiles.masks, prediction),
    }

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
    """

    kind: str  # "tflite" or "keras"
    model: Any  # TileModel or KerasTileModel: predict_masks, probabilities, output_classes
    tiles: TileSet
    split: str
    run_dir: Path | None
    indices: np.ndarray
    groups: np.ndarray

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


def split_indices(tiles: TileSet, data: Path, split: str, run_dir: Path | None) -> np.ndarray:
    """Indices into ``tiles`` of the run's ``split`` (every tile for "all").

    Raises:
        MarsEdgeError: no run to take the split from, another data file, or no such split.
    """
    if split == "all":
        return np.arange(len(tiles))
    if run_dir is None:
        raise UsageError(
            f"--split {split} needs the model's run directory (a run dir as MODEL, or a .tflite whose "
            "metadata names an existing source_run); use --split all"
        )
    from marsedge.train import rundir

    run = rundir.read_run(run_dir, need_weights=False)
    if run.data_sha256 and data.is_file() and file_sha256(data) != run.data_sha256:
        raise DataError(f"{data}: not the data file of run {run_dir}, so its {split} split does not apply; use --split all")
    indices = rundir.split_indices(run)
    if split not in indices:
        raise RunDirError(f"{run_dir}: no '{split}' split")
    if len(indices[split]) and indices[split].max() >= len(tiles):
        raise DataError(f"{data}: has {len(tiles)} tiles but run {run_dir} splits {indices[split].max() + 1}+")
    return np.asarray(indices[split])


def open_model(model: str | Path, threads: int | None = None) -> tuple[str, Any, Path | None]:
    """``(kind, model, run directory or None)`` for a .tflite file or a run directory.

    Raises:
        MarsEdgeError: missing or unreadable model (the message names it).
    """
    path = Path(model)
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


def load_target(model: str | Path, data: str | Path, split: str = "all", threads: int | None = None) -> EvalTarget:
    """Open a model (.tflite file or run directory) and the tiles to evaluate it on.

    Raises:
        MarsEdgeError: missing model, unreadable data, or a split that cannot apply.
    """
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    data = Path(data)
    kind, predictor, run_dir = open_model(model, threads)
    every = load_tiles(data)
    indices = split_indices(every, data, split, run_dir)
    if len(indices) == 0:
        raise DataError(f"{data}: no tiles in the {split} split")
    groups = (frame_groups(every.images) if every.sources is None else np.arange(len(every)))[indices]
    return EvalTarget(kind, predictor, every.subset(indices), split, run_dir, indices, groups)


def evaluate(
    model: str | Path, data: str | Path, split: str = "all", threads: int | None = None, anatomy: bool = False
) -> dict[str, Any]:
    """Mean IoU, per-class IoU and confusion matrix of a model on labelled tiles.

    Args:
        model: a .tflite from ``marsedge export`` or a run directory (float Keras).
        data: AN2DL .npz or a folder of image/mask PNG pairs.
        split: "all" tiles, or the run's "train" / "val" / "test" split of its own data.
        threads: interpreter threads for a .tflite.
        anatomy: add ``anatomy``, where the errors are (:mod:`marsedge.evaluation.anatomy`).

    Raises:
        MarsEdgeError: see :func:`load_target`; tiles of another size than the model's.
    """
    target = load_target(model, data, split, threads)
    prediction = target.predict_masks()
    report = report_for(target, prediction, model, data)
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
        "class_names": list(CLASS_NAMES),
        **score(target.tiles.masks, prediction),
    }

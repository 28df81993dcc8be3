"""Masks and IoU from a Keras run or a .tflite model on labelled tiles.

Importing this module does not import TensorFlow: a .tflite is run with the edge
runtime's interpreter (LiteRT), and TensorFlow loads only to evaluate a run directory's
Keras model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.errors import DataError, MarsEdgeError, RunDirError
from marsedge.train.data import CLASS_NAMES, TileSet, file_sha256, load_tiles
from marsedge.train.metrics import confusion_matrix, iou_report, pixel_agreement

log = logging.getLogger(__name__)

SPLITS = ("all", "train", "val", "test")


class TFLiteTileModel:
    """A .tflite segmenter run tile by tile on tiles of exactly its input size.

    Tile data sets (the AN2DL .npz, PNG tile folders) are at model resolution already
    (a 64x128 tile is half of a 256-px frame reduced 2x), so tiles are scored as they
    are, at scale 1; whole camera frames go through the runtime's resize rule instead
    (:func:`marsedge.benchmarks.frames.evaluate_frames`).

    Args:
        content: the .tflite bytes (appended metadata is ignored by the interpreter).
        output_classes: class id of each output channel; from the metadata when None.
        threads: interpreter threads; None lets the interpreter choose.
        normalization: ``(mean, std)`` when the graph takes normalised levels
            (``(level - mean) / std``, the input table does it); when None, the embedded
            metadata's ``input.normalization`` if it says ``in_model: false``, else none.

    Raises:
        MarsEdgeError: not a model the interpreter can run, or no class list.
    """

    def __init__(
        self,
        content: bytes,
        output_classes: list[int] | None = None,
        threads: int | None = None,
        normalization: tuple[float, float] | None = None,
    ):
        from marsedge.edge_runtime.errors import ModelError
        from marsedge.edge_runtime.interpreter import input_lut, make_interpreter
        from marsedge.core.metadata import input_normalization, read_metadata

        try:
            try:
                metadata = read_metadata(content)
            except ModelError:
                if output_classes is None:
                    raise
                metadata = None  # a bare flatbuffer (export scores it before embedding metadata)
            if output_classes is None:
                output_classes = list(metadata["output_classes"])
            if normalization is None and metadata is not None:
                normalization = input_normalization(metadata)
            self._interpreter = make_interpreter(content, threads)
        except ModelError as exc:
            raise MarsEdgeError(str(exc)) from None
        self._content = content  # the interpreter may point into it
        self.metadata = metadata  # the embedded marsedge.json; None for a bare flatbuffer
        self.output_classes = np.asarray(output_classes, dtype=np.uint8)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        _, self.height, self.width, _ = (int(d) for d in self._input["shape"])
        try:
            self._lut = input_lut(self._input, normalization)
        except ModelError as exc:
            raise MarsEdgeError(str(exc)) from None

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> "TFLiteTileModel":
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise MarsEdgeError(f"{path}: cannot read model ({exc.strerror or exc})") from None
        try:
            return cls(content, threads=threads)
        except MarsEdgeError as exc:
            raise MarsEdgeError(f"{path}: {exc}") from None

    def logits(self, tile: np.ndarray) -> np.ndarray:
        """Raw output ``(H, W, C)`` for one uint8 tile (int8 models: still quantised)."""
        self._interpreter.set_tensor(self._input["index"], self._lut[tile][None, ..., None])
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"])[0]

    def float_logits(self, tile: np.ndarray) -> np.ndarray:
        """Output ``(H, W, C)`` float32 for one uint8 tile (int8 models dequantised)."""
        raw = self.logits(tile).astype(np.float32)
        scale, zero_point = self._output["quantization"]
        return (raw - zero_point) * scale if scale else raw

    def predict_masks(self, images: np.ndarray) -> np.ndarray:
        """Class-id masks ``(N, H, W)`` for uint8 tiles ``(N, H, W)`` of the model's size.

        Raises:
            DataError: the tiles are not the model's input size.
        """
        _check_size(images, (self.height, self.width))
        masks = np.empty(images.shape, dtype=np.uint8)
        for index, tile in enumerate(images):
            # argmax of int8 logits equals argmax after dequantising (positive scale)
            masks[index] = self.output_classes[np.argmax(self.logits(tile), axis=-1)]
        return masks


class KerasTileModel:
    """A run directory's float Keras model (best weights)."""

    def __init__(self, model, output_classes: list[int], input_shape: tuple[int, int]):
        self.model = model
        self.output_classes = np.asarray(output_classes, dtype=np.uint8)
        self.height, self.width = input_shape

    @classmethod
    def from_run(cls, run_dir: str | Path) -> "KerasTileModel":
        from marsedge.train import rundir

        run = rundir.read_run(run_dir)
        return cls(rundir.load_model(run), run.output_classes, run.input_shape)

    def predict_masks(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from marsedge.train.trainer import predict_classes

        _check_size(images, (self.height, self.width))
        return predict_classes(self.model, images, list(self.output_classes), batch_size=batch_size)


def _check_size(images: np.ndarray, size: tuple[int, int]) -> None:
    if images.ndim != 3 or images.shape[1:] != size:
        raise DataError(
            f"tiles are {'x'.join(str(d) for d in images.shape[1:])} but the model takes {size[0]}x{size[1]}; "
            "evaluate on tiles of the model's input size"
        )


def score(truth: np.ndarray, prediction: np.ndarray, reference: np.ndarray | None = None) -> dict[str, Any]:
    """IoU report of ``prediction`` against ``truth`` (class 0 ignored), plus pixel agreement
    with a ``reference`` prediction over all pixels when given."""
    report = iou_report(confusion_matrix(truth, prediction), CLASS_NAMES)
    if reference is not None:
        report["agreement"] = pixel_agreement(prediction, reference)
    return report


@dataclass(frozen=True)
class EvalTarget:
    """What ``marsedge eval`` measures: a model, the tiles and which split of them.

    ``trained_tiles``: how many of ``tiles`` the model trained on (None when its split is
    unknown); ``warning``: a line saying so when the score is not a held-out one.
    """

    kind: str  # "tflite" or "keras"
    model: Any
    tiles: TileSet
    split: str
    run_dir: Path | None
    trained_tiles: int | None = None
    warning: str | None = None


def _source_run(model_path: Path) -> Path | None:
    """The run directory a .tflite came from, when its metadata names one that exists."""
    from marsedge.edge_runtime.errors import ModelError
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
            another file.
        DataError: ``data`` is not the file the model was trained on, or the recomputed
            split is not the one the model recorded.
    """
    from marsedge.core.metadata import SPLIT_SETTINGS, read_split_recipe
    from marsedge.edge_runtime.errors import ModelError

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
    if recipe.get("split_from"):
        raise MarsEdgeError(
            f"the model's split was inherited from {recipe['split_from']}: score it through its run directory"
        )
    from marsedge.train.config import TrainConfig
    from marsedge.train.trainer import compute_split
    from marsedge.train.rundir import split_fingerprint

    settings = {key: recipe.get(key, default) for key, default in SPLIT_SETTINGS.items()}
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
        raise MarsEdgeError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    path, data = Path(model), Path(data)
    if path.is_dir():
        run_dir: Path | None = path
        predictor: Any = KerasTileModel.from_run(path)
        kind = "keras"
    elif path.is_file():
        predictor = TFLiteTileModel.from_file(path, threads)
        run_dir = _source_run(path)
        kind = "tflite"
    else:
        raise MarsEdgeError(f"{path}: no such model file or run directory")
    metadata = getattr(predictor, "metadata", None) or {}
    tiles: TileSet | None = None
    splits: dict[str, np.ndarray] | None = None
    why = "no run directory and no split recipe in the model's metadata"
    if run_dir is not None:
        splits = _run_split(run_dir, data)
        why = f"{data} is not the data file of run {run_dir}"
    elif metadata.get("split") is not None:
        if file_sha256(data) == metadata["split"].get("data_sha256"):
            tiles, splits = recipe_split(metadata, data)
        else:
            why = f"{data} is not {metadata['split'].get('data_file')}, the model's training data"
    if split is None:
        split = "test" if splits is not None and len(splits.get("test", ())) else "all"
    if split != "all" and splits is None:
        raise MarsEdgeError(
            f"--split {split} needs the model's run directory or its split recipe ({why}; a .tflite from "
            "`marsedge export` carries the recipe); use --split all"
        )
    if tiles is None:
        tiles = load_tiles(data)
    total = len(tiles)
    if split == "all":
        index = np.arange(total)
    elif split not in splits:
        raise RunDirError(f"{run_dir or path}: no '{split}' split")
    else:
        index = splits[split]
        if len(index) and index.max() >= total:
            raise DataError(f"{data}: has {total} tiles but the model's split indexes {index.max() + 1}+")
    trained = None if splits is None else int(np.isin(index, splits.get("train", ())).sum())
    tiles = tiles.subset(index)
    if len(tiles) == 0:
        raise DataError(f"{data}: no tiles in the {split} split")
    warning = trained_warning(trained, len(tiles), split, why)
    return EvalTarget(kind, predictor, tiles, split, run_dir, trained, warning)


def evaluate(
    model: str | Path, data: str | Path, split: str | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Mean IoU, per-class IoU and confusion matrix of a model on labelled tiles.

    Args:
        model: a .tflite from ``marsedge export`` or a run directory (float Keras).
        data: AN2DL .npz or a folder of image/mask PNG pairs.
        split: "all" tiles, or the model's "train" / "val" / "test" split of its own data;
            None: "test" when the model's split is known, else "all".
        threads: interpreter threads for a .tflite.

    Raises:
        MarsEdgeError: see :func:`load_target`; tiles of another size than the model's.
    """
    target = load_target(model, data, split, threads)
    prediction = target.model.predict_masks(target.tiles.images)
    report = score(target.tiles.masks, prediction)
    return {
        "model": str(model),
        "kind": target.kind,
        "data": str(data),
        "split": target.split,
        "tiles": len(target.tiles),
        "trained_tiles": target.trained_tiles,
        "warning": target.warning,
        "class_names": list(CLASS_NAMES),
        **report,
    }

"""marsedge metadata carried inside the .tflite file: the one module that writes it
(``marsedge export``, :func:`build_metadata`) and reads and checks it (the edge runtime,
:func:`read_metadata`).

A JSON document ``marsedge.json`` lives in a ZIP archive appended to the TFLite
flatbuffer. The interpreter ignores trailing bytes and :mod:`zipfile` finds an archive at
the end of a file, so the model needs no side files (see DEVELOPERS.md, "Model contract").

The archive also holds ``flatbuffer.sha256``, the SHA-256 of the flatbuffer, so a model
damaged in transfer or storage is refused before the interpreter sees it: LiteRT checks a
flatbuffer's structure, not its contents, and some corrupted models abort the process
(found by fuzzing; see docs/reliability.md). Models written before the checksum existed
are loaded without the check.

Field of view (``marsedge-tflite/2``): ``input.model_pixels_per_frame`` says how many model
pixels span a whole camera frame of the data the model was trained on (its longer side;
the training frames are square). The bundled model saw 256-px NavCam frames reduced 2x:
128. A whole frame of any size is resized by ``model_pixels_per_frame / longer side``
(:class:`FieldOfView`), so a 1024x1024 NavCam frame and its 256x256 copy look alike to the
model. ``marsedge-tflite/1`` files carried a fixed ``input.scale`` instead (right for
256-px frames only); they still load, with a notice.

Split recipe (``split``): how the training data was divided into train / val / test, so
a model file alone can be scored on its own test split: the data file's name and SHA-256,
and the settings that :func:`marsedge.train.trainer.compute_split` reads (seed, split
seed, fractions, limit, cleaning, field of view). ``source_split`` holds the SHA-256 of
each split's tile indices, which proves that a recomputed split is the one the model saw.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any

from .classes import LEGACY_NAMES, class_entries
from .errors import ModelError

logger = logging.getLogger(__name__)

METADATA_NAME = "marsedge.json"
CHECKSUM_NAME = "flatbuffer.sha256"
FORMAT = "marsedge-tflite/2"
LEGACY_FORMAT = "marsedge-tflite/1"  # input.scale instead of input.model_pixels_per_frame
READABLE_FORMATS = (FORMAT, LEGACY_FORMAT)
REQUIRED_KEYS = ("format", "name", "input", "classes", "output_classes")
MAX_METADATA_BYTES = 1 << 20  # a real marsedge.json is a few KB; refuse a zip bomb
MAX_INPUT_SCALE = 16.0  # model pixels per input pixel: more is a 256x enlargement
MIN_INPUT_SCALE = 1e-4  # fewer: a 1.28-million-pixel-wide frame seen 128 px across
MAX_MODEL_PIXELS_PER_FRAME = 1 << 16
SPLIT_RECIPE = "marsedge-split/1"
# the training settings a split depends on (TrainConfig field names), with their defaults
SPLIT_SETTINGS: dict[str, Any] = {
    "seed": 0,
    "split_seed": None,
    "val_fraction": 0.1,
    "test_fraction": 0.1,
    "limit": None,
    "clean": True,
    "frame_pixels": 128,
    "split_from": None,
}
SPLIT_NAMES = ("train", "val", "test")
MAX_TEMPERATURE = 100.0


def build_metadata(
    *,
    name: str,
    precision: str,
    height: int,
    width: int,
    normalization: dict[str, Any],
    output_classes: list[int],
    model_pixels_per_frame: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``marsedge.json`` document for a model (DEVELOPERS.md, "Model contract").

    Args:
        name: the model's name.
        precision: "float32", "float16", "dynamic", "int8-ptq" or "int8-qat".
        height, width: the model's input tile.
        normalization: ``{mean, std, in_model}``.
        output_classes: class id of each output channel.
        model_pixels_per_frame: model pixels across a whole training frame's longer side;
            None when unknown (the runtime then feeds frames at their own resolution).
        extra: further top-level keys (``marsedge_version``, ``metrics``, ``source_run``,
            ``source_split``, ``quantization``, ``created``...).

    Raises:
        ModelError: the document would not pass :func:`read_metadata`'s checks.
    """
    document: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "precision": precision,
        "input": {
            "height": int(height),
            "width": int(width),
            "channels": 1,
            "pixel_range": [0, 255],
            "normalization": dict(normalization),
        },
        "classes": class_entries(),
        "output_classes": [int(c) for c in output_classes],
        **extra,
    }
    if model_pixels_per_frame is not None:
        document["input"]["model_pixels_per_frame"] = _plain_number(model_pixels_per_frame)
    _check(document)
    return document


def restamp(metadata: dict[str, Any], model_pixels_per_frame: float | None) -> dict[str, Any]:
    """Checked metadata of any readable format rewritten as the current format: the
    field of view stated as ``model_pixels_per_frame``, ``input.scale`` dropped, class 0
    named by its current name. The flatbuffer is not touched."""
    document = json.loads(json.dumps(metadata))
    document["format"] = FORMAT
    document["input"].pop("scale", None)
    document["input"].pop("model_pixels_per_frame", None)
    if model_pixels_per_frame is not None:
        document["input"]["model_pixels_per_frame"] = _plain_number(model_pixels_per_frame)
    for entry in document["classes"]:
        entry["name"] = LEGACY_NAMES.get(entry["name"], entry["name"])
    _check(document)
    return document


def split_recipe(
    settings: dict[str, Any], data_file: str, data_sha256: str, sizes: dict[str, int] | None = None
) -> dict[str, Any]:
    """The ``split`` document: what recomputes a model's train/val/test split from its data.

    Args:
        settings: the training settings (``TrainConfig.to_dict()``); only
            :data:`SPLIT_SETTINGS` are kept.
        data_file: the data file's name (its folder is not part of the recipe).
        data_sha256: the SHA-256 of the data file (``marsedge.train.data.file_sha256``).
        sizes: tiles per split, for people reading the metadata.

    Raises:
        ModelError: the recipe would not pass :func:`read_split_recipe`'s checks.
    """
    recipe: dict[str, Any] = {
        "recipe": SPLIT_RECIPE,
        "data_file": os.path.basename(str(data_file)),
        "data_sha256": str(data_sha256),
        **{key: settings.get(key, default) for key, default in SPLIT_SETTINGS.items()},
    }
    if recipe["split_from"]:
        recipe["split_from"] = os.path.basename(str(recipe["split_from"]))
    if sizes is not None:
        recipe["sizes"] = {name: int(sizes[name]) for name in SPLIT_NAMES if name in sizes}
    _check_split(recipe)
    return recipe


def read_split_recipe(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The checked ``split`` recipe of checked metadata; None when the model carries none.

    Raises:
        ModelError: the recipe is malformed.
    """
    recipe = metadata.get("split")
    if recipe is None:
        return None
    _check_split(recipe)
    return recipe


def _check_split(recipe: Any) -> None:
    if not isinstance(recipe, dict) or recipe.get("recipe") != SPLIT_RECIPE:
        raise ModelError(f"{METADATA_NAME}: split must be an object with recipe {SPLIT_RECIPE!r}")
    if not isinstance(recipe.get("data_sha256"), str) or len(recipe["data_sha256"]) != 64:
        raise ModelError(f"{METADATA_NAME}: split.data_sha256 must be a SHA-256 in hex")
    if not isinstance(recipe.get("data_file"), str) or not recipe["data_file"]:
        raise ModelError(f"{METADATA_NAME}: split.data_file must name the data file")
    for key in ("val_fraction", "test_fraction"):
        value = recipe.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 0.5:
            raise ModelError(f"{METADATA_NAME}: split.{key} must be a number in [0, 0.5), got {recipe.get(key)!r}")
    for key in ("seed", "split_seed", "limit", "frame_pixels"):
        value = recipe.get(key, SPLIT_SETTINGS[key])
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ModelError(f"{METADATA_NAME}: split.{key} must be an integer, got {value!r}")


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def embed_metadata(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """Returns ``model_bytes`` with ``metadata`` appended as a ZIP holding ``marsedge.json``
    and the flatbuffer's SHA-256.

    Metadata already appended to ``model_bytes`` is replaced, not stacked.
    """
    flatbuffer = _strip_archive(bytes(model_bytes))
    archive = io.BytesIO()
    members = {
        METADATA_NAME: json.dumps(metadata, indent=2, sort_keys=True),
        CHECKSUM_NAME: hashlib.sha256(flatbuffer).hexdigest() + "\n",
    }
    with zipfile.ZipFile(archive, "w") as zf:
        for name, text in members.items():
            # A fixed timestamp keeps the output a function of the inputs (reproducible exports).
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
    return flatbuffer + archive.getvalue()


def check_flatbuffer(model: bytes) -> bool:
    """Checks the flatbuffer of a model's bytes against the SHA-256 stored beside its
    metadata; returns False when the model carries no checksum (written before it existed).

    Raises:
        ModelError: the flatbuffer does not match its checksum (the file is damaged).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            info = zf.getinfo(CHECKSUM_NAME)
            expected = zf.read(info)[:200].decode("ascii").strip() if info.file_size <= 200 else ""
            offset = min(i.header_offset for i in zf.infolist())
    except KeyError:
        return False
    except Exception:  # a damaged archive: read_metadata reports it
        return False
    actual = hashlib.sha256(model[:offset]).hexdigest()
    if actual != expected:
        raise ModelError(
            f"corrupt model: its flatbuffer does not match the SHA-256 stored with its metadata "
            f"({actual[:12]}… vs {expected[:12]}…); damaged in transfer or storage?"
        )
    return True


def read_metadata(model: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Reads and checks the metadata of a marsedge model (a path or the file's bytes).

    Raises:
        ModelError: the file cannot be read, has no metadata, or the metadata is corrupt
            or misses a required key.
    """
    data = model if isinstance(model, (bytes, bytearray, memoryview)) else _read_bytes(model)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo(METADATA_NAME)
            if info.file_size > MAX_METADATA_BYTES:
                raise ModelError(f"{METADATA_NAME} is {info.file_size} bytes, above the {MAX_METADATA_BYTES} allowed")
            raw = zf.read(info)[: MAX_METADATA_BYTES + 1]
    except ModelError:
        raise
    except KeyError:
        raise ModelError(f"no {METADATA_NAME} in the appended archive (not a marsedge model)") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise ModelError("no marsedge metadata (was it written by `marsedge export`?)") from None
    except Exception as exc:  # zlib errors, unsupported compression, encryption: a corrupt archive
        raise ModelError(f"corrupt metadata archive ({type(exc).__name__}: {exc})") from None
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"corrupt {METADATA_NAME}: {exc}") from None
    _check(metadata)
    return metadata


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelError(f"cannot read model: {exc.strerror or exc}") from None


def _strip_archive(data: bytes) -> bytes:
    """The flatbuffer part of ``data``: everything before an appended ZIP, if any."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return data
    # zipfile shifts header offsets by the bytes found before the archive.
    return data[: min(info.header_offset for info in infos)] if infos else data


def _check(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise ModelError(f"corrupt {METADATA_NAME}: expected a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ModelError(f"{METADATA_NAME} lacks {', '.join(missing)}")
    if metadata["format"] not in READABLE_FORMATS:
        raise ModelError(
            f"unsupported metadata format {metadata['format']!r}, expected one of {', '.join(READABLE_FORMATS)}"
        )
    size = metadata["input"]
    if not isinstance(size, dict) or not all(isinstance(size.get(k), int) and size[k] > 0 for k in ("height", "width")):
        raise ModelError(f"{METADATA_NAME}: input needs positive integer height and width")
    if metadata["format"] == LEGACY_FORMAT:
        scale = size.get("scale", 1.0)
        if not _number_in(scale, 0, MAX_INPUT_SCALE):
            raise ModelError(
                f"{METADATA_NAME}: input.scale (model pixels per source pixel) must be a number in "
                f"(0, {MAX_INPUT_SCALE:g}], got {scale!r}"
            )
    else:
        if "scale" in size:
            raise ModelError(
                f"{METADATA_NAME}: input.scale is a {LEGACY_FORMAT} key; {FORMAT} states input.model_pixels_per_frame"
            )
        pixels = size.get("model_pixels_per_frame")
        if pixels is not None and not _number_in(pixels, 0, MAX_MODEL_PIXELS_PER_FRAME):
            raise ModelError(
                f"{METADATA_NAME}: input.model_pixels_per_frame must be a number in "
                f"(0, {MAX_MODEL_PIXELS_PER_FRAME}], got {pixels!r}"
            )
    norm = size.get("normalization") or {}
    if not isinstance(norm, dict):
        raise ModelError(f"{METADATA_NAME}: input.normalization must be an object")
    if not norm.get("in_model", True):
        mean, std = norm.get("mean", 0.0), norm.get("std", 1.0)
        if not (_numbers(mean) and _numbers(std) and all(v > 0 for v in _as_list(std))):
            raise ModelError(f"{METADATA_NAME}: input.normalization needs numeric mean and positive std")
    classes = metadata["classes"]
    if not isinstance(classes, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), int) and 0 <= c["id"] < 256 and isinstance(c.get("name"), str)
        for c in classes
    ):
        raise ModelError(f"{METADATA_NAME}: classes must be a list of {{id, name, color}} with ids 0..255")
    ids = {c["id"] for c in classes}
    outputs = metadata["output_classes"]
    if not isinstance(outputs, list) or not outputs or any(not isinstance(k, int) or k not in ids for k in outputs):
        raise ModelError(f"{METADATA_NAME}: output_classes {outputs!r} must be ids listed in classes {sorted(ids)}")
    if metadata.get("split") is not None:
        _check_split(metadata["split"])
    calibration = metadata.get("calibration")
    if calibration is not None and not (
        isinstance(calibration, dict) and _number_in(calibration.get("temperature"), 0, MAX_TEMPERATURE)
    ):
        raise ModelError(f"{METADATA_NAME}: calibration.temperature must be a number in (0, {MAX_TEMPERATURE:g}]")


def _number_in(value: Any, low: float, high: float) -> bool:
    """A real number (not a bool, not NaN) in ``(low, high]``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low < value <= high


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _numbers(value: Any) -> bool:
    items = _as_list(value)
    return bool(items) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in items
    )


@dataclass(frozen=True)
class ClassInfo:
    """One class of the model: its id in masks, its name and its display colour."""

    id: int
    name: str
    color: tuple[int, int, int]


def input_normalization(metadata: dict[str, Any]) -> tuple[float, float] | None:
    """The ``(mean, std)`` the runtime applies to grey levels before the model
    (``normalization.in_model: false``), or None when the graph normalises itself."""
    norm = metadata["input"].get("normalization") or {}
    if norm.get("in_model", True):
        return None
    return _scalar(norm.get("mean", 0.0)), _scalar(norm.get("std", 1.0))


def temperature(metadata: dict[str, Any]) -> float:
    """The softmax temperature of checked metadata (``calibration.temperature``, fitted on
    the val split by ``marsedge export``); 1.0 for files written before it was recorded."""
    calibration = metadata.get("calibration") or {}
    return float(calibration.get("temperature", 1.0))


def _scalar(value: Any) -> float:
    return float(value[0] if isinstance(value, (list, tuple)) else value)


def class_table(metadata: dict[str, Any]) -> tuple[ClassInfo, ...]:
    """The classes of checked metadata, sorted by id, colours as RGB tuples.

    A colour may be written ``"#rrggbb"`` or ``[r, g, b]``; a missing or unreadable one
    falls back to grey so a cosmetic slip never stops segmentation. Old names are shown
    by their current ones (class 0 "background" is "unlabeled").
    """
    return tuple(
        ClassInfo(int(c["id"]), LEGACY_NAMES.get(str(c["name"]), str(c["name"])), _rgb(c.get("color")))
        for c in sorted(metadata["classes"], key=lambda c: c["id"])
    )


def _rgb(value: Any) -> tuple[int, int, int]:
    if isinstance(value, str) and len(value) == 7 and value.startswith("#"):
        try:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    ):
        return tuple(value)  # type: ignore[return-value]
    return (128, 128, 128)


@dataclass(frozen=True)
class FieldOfView:
    """How a model wants frames resized: the ground resolution it was trained at.

    Attributes:
        model_pixels_per_frame: model pixels across the longer side of a whole training
            frame (128 for the bundled model); None when the metadata does not say.
        legacy_scale: a ``marsedge-tflite/1`` file's fixed ``input.scale`` (model pixels
            per input pixel whatever the frame's size); None for current files.
    """

    model_pixels_per_frame: float | None
    legacy_scale: float | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> FieldOfView:
        """The field of view of checked metadata."""
        size = metadata["input"]
        if metadata["format"] == LEGACY_FORMAT:
            return cls(None, float(size.get("scale", 1.0)))
        pixels = size.get("model_pixels_per_frame")
        return cls(float(pixels) if pixels is not None else None)

    def frame_scale(self, height: int, width: int) -> float:
        """Model pixels per input pixel for a whole frame of ``height x width``.

        The frame's longer side spans ``model_pixels_per_frame`` model pixels (training
        frames are square, and the longer side keeps the rule the same for a frame and
        its rotation): a 1024x1024 frame is seen at 128x128, a 1280x960 one at 128x96.
        A legacy file's fixed ``input.scale`` applies as it did; a model that states
        neither sees frames at their own resolution.
        """
        if self.model_pixels_per_frame is not None:
            return self.model_pixels_per_frame / max(height, width, 1)
        return self.legacy_scale if self.legacy_scale is not None else 1.0

    def override_scale(self, frame_width: float | None = None, scale: float | None = None) -> float | None:
        """The fixed scale an override asks for: ``scale`` itself (model pixels per input
        pixel), or ``model_pixels_per_frame / frame_width`` for an input cut from a frame
        ``frame_width`` pixels wide; None without an override (each frame by its size).

        Raises:
            ValueError: both given, a value that is not a finite positive number, a
                resize outside ``[MIN_INPUT_SCALE, MAX_INPUT_SCALE]``, or ``frame_width``
                for a model that does not state ``model_pixels_per_frame``.
        """
        if frame_width is not None and scale is not None:
            raise ValueError("give frame_width or scale, not both")
        if scale is not None:
            _check_override("scale", scale)
            return float(scale)
        if frame_width is None:
            return None
        _check_override("frame_width", frame_width)
        if self.model_pixels_per_frame is None:
            raise ValueError(
                "frame_width needs a model whose metadata states model_pixels_per_frame "
                "(this one has only a fixed input.scale); give scale instead"
            )
        derived = self.model_pixels_per_frame / float(frame_width)
        if not MIN_INPUT_SCALE <= derived <= MAX_INPUT_SCALE:
            raise ValueError(
                f"frame_width {frame_width:g} gives a resize of {derived:g} model pixels per input pixel, "
                f"outside [{MIN_INPUT_SCALE:g}, {MAX_INPUT_SCALE:g}] "
                f"(the model sees {self.model_pixels_per_frame:g} pixels across a whole frame)"
            )
        return derived

    def describe(self) -> dict[str, Any]:
        """``{"model_pixels_per_frame"}`` (or the legacy ``input_scale``) for JSON records."""
        pixels = self.model_pixels_per_frame
        record: dict[str, Any] = {"model_pixels_per_frame": _plain_number(pixels) if pixels is not None else None}
        if self.legacy_scale is not None:
            record["legacy_input_scale"] = self.legacy_scale
        return record


def _check_override(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0, got {value!r}")
    if name == "scale" and not MIN_INPUT_SCALE <= value <= MAX_INPUT_SCALE:
        raise ValueError(
            f"scale {value:g} (model pixels per input pixel) is outside [{MIN_INPUT_SCALE:g}, {MAX_INPUT_SCALE:g}]"
        )

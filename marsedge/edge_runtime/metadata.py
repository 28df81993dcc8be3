"""marsedge metadata carried inside the .tflite file.

A JSON document ``marsedge.json`` lives in a ZIP archive appended to the TFLite
flatbuffer. The interpreter ignores trailing bytes and :mod:`zipfile` finds an archive at
the end of a file, so the model needs no side files (see DEVELOPERS.md, "Model contract").

The archive also holds ``flatbuffer.sha256``, the SHA-256 of the flatbuffer, so a model
damaged in transfer or storage is refused before the interpreter sees it: LiteRT checks a
flatbuffer's structure, not its contents, and some corrupted models abort the process
(found by fuzzing; see docs/reliability.md). Models written before the checksum existed
are loaded without the check.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any

from .errors import ModelError

METADATA_NAME = "marsedge.json"
CHECKSUM_NAME = "flatbuffer.sha256"
FORMAT = "marsedge-tflite/1"
REQUIRED_KEYS = ("format", "name", "input", "classes", "output_classes")
MAX_METADATA_BYTES = 1 << 20  # a real marsedge.json is a few KB; refuse a zip bomb
MAX_INPUT_SCALE = 16.0


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
    if metadata["format"] != FORMAT:
        raise ModelError(f"unsupported metadata format {metadata['format']!r}, expected {FORMAT!r}")
    size = metadata["input"]
    if not isinstance(size, dict) or not all(isinstance(size.get(k), int) and size[k] > 0 for k in ("height", "width")):
        raise ModelError(f"{METADATA_NAME}: input needs positive integer height and width")
    scale = size.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= MAX_INPUT_SCALE:
        raise ModelError(
            f"{METADATA_NAME}: input.scale (model pixels per source pixel) must be a number in "
            f"(0, {MAX_INPUT_SCALE:g}], got {scale!r}"
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


def _scalar(value: Any) -> float:
    return float(value[0] if isinstance(value, (list, tuple)) else value)


def class_table(metadata: dict[str, Any]) -> tuple[ClassInfo, ...]:
    """The classes of checked metadata, sorted by id, colours as RGB tuples.

    A colour may be written ``"#rrggbb"`` or ``[r, g, b]``; a missing or unreadable one
    falls back to grey so a cosmetic slip never stops segmentation.
    """
    return tuple(
        ClassInfo(int(c["id"]), str(c["name"]), _rgb(c.get("color")))
        for c in sorted(metadata["classes"], key=lambda c: c["id"])
    )


def _rgb(value: Any) -> tuple[int, int, int]:
    if isinstance(value, str) and len(value) == 7 and value.startswith("#"):
        try:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        return tuple(value)  # type: ignore[return-value]
    return (128, 128, 128)

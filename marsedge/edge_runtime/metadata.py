"""marsedge metadata carried inside the .tflite file.

A JSON document ``marsedge.json`` lives in a ZIP archive appended to the TFLite
flatbuffer. The interpreter ignores trailing bytes and :mod:`zipfile` finds an archive at
the end of a file, so the model needs no side files (see DEVELOPERS.md, "Model contract").
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any

from .errors import ModelError

METADATA_NAME = "marsedge.json"
FORMAT = "marsedge-tflite/1"
REQUIRED_KEYS = ("format", "name", "input", "classes", "output_classes")


def embed_metadata(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """Returns ``model_bytes`` with ``metadata`` appended as a ZIP holding ``marsedge.json``.

    Metadata already appended to ``model_bytes`` is replaced, not stacked.
    """
    flatbuffer = _strip_archive(bytes(model_bytes))
    archive = io.BytesIO()
    # A fixed timestamp keeps the output a function of the inputs (reproducible exports).
    info = zipfile.ZipInfo(METADATA_NAME, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, json.dumps(metadata, indent=2, sort_keys=True))
    return flatbuffer + archive.getvalue()


def read_metadata(model: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Reads and checks the metadata of a marsedge model (a path or the file's bytes).

    Raises:
        ModelError: the file cannot be read, has no metadata, or the metadata is corrupt
            or misses a required key.
    """
    data = model if isinstance(model, (bytes, bytearray, memoryview)) else _read_bytes(model)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            raw = zf.read(METADATA_NAME)
    except KeyError:
        raise ModelError(f"no {METADATA_NAME} in the appended archive (not a marsedge model)") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise ModelError("no marsedge metadata (was it written by `marsedge export`?)") from None
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
    classes = metadata["classes"]
    if not isinstance(classes, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), int) and 0 <= c["id"] < 256 and isinstance(c.get("name"), str)
        for c in classes
    ):
        raise ModelError(f"{METADATA_NAME}: classes must be a list of {{id, name, color}} with ids 0..255")
    ids = {c["id"] for c in classes}
    outputs = metadata["output_classes"]
    if not isinstance(outputs, list) or not outputs or any(k not in ids for k in outputs):
        raise ModelError(f"{METADATA_NAME}: output_classes {outputs!r} must be ids listed in classes {sorted(ids)}")


@dataclass(frozen=True)
class ClassInfo:
    """One class of the model: its id in masks, its name and its display colour."""

    id: int
    name: str
    color: tuple[int, int, int]


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

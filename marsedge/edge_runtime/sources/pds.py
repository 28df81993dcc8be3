"""PDS products as frames: PDS3 ``.IMG`` (attached label), ``.IMG`` + ``.LBL``, PDS4 ``.xml``.

Read with ``pdr`` (the Planetary Data Reader, the ``[pds]`` extra), imported only when a
product is read. ``pdr`` lays out the image object (record and byte offsets, line and
sample order, band storage, line prefix and suffix bytes); this module picks the object
and band, turns its samples into uint8 or uint16 levels (:mod:`.bitdepth`) that the bit
depth reads as 8-bit grey (``auto`` honours the label's sample bits), flips it upright when the label says it displays mirrored, and carries the
product's identity (product id, instrument, sol, spacecraft clock) to the outputs.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.core.errors import first_line

from ..errors import ImageError
from ..grey import frame_to_gray8
from .bitdepth import samples_to_levels

LABEL_SUFFIXES = (".lbl", ".xml")
DATA_SUFFIXES = (".img",)
PDS_SUFFIXES = DATA_SUFFIXES + LABEL_SUFFIXES
# How an attached PDS3 label starts (ODL_VERSION_ID: older products; CCSD: SFDU-wrapped ones).
_PDS3_STARTS = (b"PDS_VERSION_ID", b"ODL_VERSION_ID", b"CCSD3Z")
_SKIPPED_OBJECTS = re.compile(r"(^|_)(LABEL|HEADER|TABLE|HISTORY|PREFIX|SUFFIX|HISTOGRAM)($|_)", re.IGNORECASE)
_STEM_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")

# The identity fields a record carries, and where each standard keeps them. PDS4 names
# are matched without their namespace prefix (msn:sol_number -> sol_number).
IDENTITY_FIELDS = ("product_id", "instrument_id", "sol", "spacecraft_clock_start")
_PDS3_KEYS = {
    "product_id": ("PRODUCT_ID",),
    "instrument_id": ("INSTRUMENT_ID",),
    "sol": ("PLANET_DAY_NUMBER",),
    "spacecraft_clock_start": ("SPACECRAFT_CLOCK_START_COUNT",),
}
_PDS4_KEYS = {
    "sol": ("sol_number", "start_sol_number", "planet_day_number"),
    "spacecraft_clock_start": (
        "spacecraft_clock_start",
        "spacecraft_clock_start_count",
        "start_spacecraft_clock",
        "spacecraft_clock_start_time",
    ),
}


@dataclass(frozen=True)
class Product:
    """One PDS product read as a frame.

    Attributes:
        levels: (H, W) samples, upright: uint8, or uint16 for 9- to 16-bit samples
            (unscaled: :meth:`gray` reads them with a bit depth).
        identity: ``standard`` (PDS3/PDS4), ``object``, ``band``, ``bands``,
            ``sample_bits`` and the label's :data:`IDENTITY_FIELDS` that it declares.
        stem: the output stem the product id gives (file-safe), else the file stem.
        declared_bits: the significant bits the label declares (its ``SAMPLE_BIT_MASK``,
            else ``SAMPLE_BITS``; PDS4 ``sample_bit_mask``/``sample_bits``); None if none.
    """

    levels: np.ndarray
    identity: dict[str, Any]
    stem: str
    declared_bits: int | None = None

    def gray(self, bit_depth: str | int = "auto") -> tuple[np.ndarray, int]:
        """uint8 (H, W) grey and the bit depth used: ``"auto"`` keeps the label's sample
        bits when it declares them (else a 16-bit frame's maximum decides, as for a 16-bit
        PNG); 8, 10, 12 or 16 override the label (:func:`.grey.frame_to_gray8`).

        Raises:
            ImageError: samples above a given ``bit_depth``.
        """
        return frame_to_gray8(self.levels, bit_depth, self.declared_bits)


def is_pds_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a PDS product file (``.IMG``, ``.LBL``, ``.xml``)."""
    return os.path.splitext(os.fspath(path))[1].lower() in PDS_SUFFIXES


def is_product_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file found in a folder is a product to segment: a PDS3 label (a ``.LBL``,
    or an ``.IMG`` that starts with its attached label) or a PDS4 ``.xml`` label (its
    root names the PDS4 namespace). An ``.IMG`` without a label of its own is the data
    file of a detached label, read through that label; other XML files are not products."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in PDS_SUFFIXES:
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096 if suffix == ".xml" else 64)
    except OSError:
        return True  # unreadable: tried, and reported, like any other named frame
    if suffix == ".xml":
        return b"pds.nasa.gov/pds4" in head
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(_PDS3_STARTS)


def read_product(path: str | os.PathLike[str], band: int | None = None, max_pixels: int | None = None) -> Product:
    """Reads a PDS3 or PDS4 product's image (its samples, upright) with its identity.

    Args:
        path: an ``.IMG`` with an attached label, a detached ``.LBL`` (or its ``.IMG``),
            or a PDS4 ``.xml`` label.
        band: 1-based band of a multi-band image; None: the first.
        max_pixels: refuse a PDS3 image whose label declares more pixels per band, before
            reading it (None: no limit here; the caller checks the size read).

    Raises:
        MissingReaderError: ``pdr`` is not installed.
        ImageError: the label cannot be read, declares no image, the data is shorter
            than the label says, the samples are not 8- to 16-bit integers, or ``band``
            is out of range.
    """
    global _last
    data = _open(path)
    _last = None  # the label parse is shared with product_stem only: a later read sees new data
    try:
        return _product(data, path, band, max_pixels)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("not enough memory to read the product") from None
    except Exception as exc:  # pdr reports malformed labels with many exception types
        raise ImageError(f"cannot read the PDS product: {first_line(exc, name_unknown=True)}") from None


def product_stem(path: str | os.PathLike[str]) -> str:
    """The output stem of a product: its label's product id (file-safe), else the file
    stem. Reads only the label; a product that cannot be read keeps its file stem (the
    read itself reports the problem)."""
    try:
        data = _open(path)
        return _stem(_identity(data), path)
    except Exception:  # the file's own read reports what is wrong with it
        return Path(path).stem


# Reading --------------------------------------------------------------------------------

_last: tuple[tuple[str, int, int], Any] | None = None  # the label product_stem parsed last


def _open(path: str | os.PathLike[str]) -> Any:
    """``pdr.read(path)`` (the label; data is read lazily), reusing the label
    :func:`product_stem` parsed when it is the same unchanged file: naming a frame's
    outputs and reading it parse the label once."""
    global _last
    from . import require

    pdr = require("pdr", "pds", "reading PDS products")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot open: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError("is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError("not a regular file (a FIFO, device or socket)")
    key = (os.path.realpath(path), info.st_size, info.st_mtime_ns)
    if _last is not None and _last[0] == key:
        return _last[1]
    with _quiet() as caught:
        try:
            data = pdr.read(os.fspath(path))
        except Exception as exc:
            raise ImageError(f"cannot read the PDS label: {_reason(exc, caught)}") from None
    if getattr(data, "standard", None) not in ("PDS3", "PDS4"):
        raise ImageError("no PDS3 or PDS4 label found")
    _last = (key, data)
    return data


def _product(data: Any, path: str | os.PathLike[str], band: int | None, max_pixels: int | None) -> Product:
    standard = data.standard
    name = _image_object(data)
    block = data.metablock_(name) if standard == "PDS3" else None
    if max_pixels and isinstance(block, Mapping):
        lines, samples = _int(block.get("LINES")), _int(block.get("LINE_SAMPLES"))
        if lines * samples > max_pixels:
            raise ImageError(
                f"{samples}x{lines} image has {lines * samples} pixels, above the limit of {max_pixels} (--max-pixels)"
            )
    _check_length(data, name, path)
    array = plain_pds3_image(data, name)
    if array is None:
        with _quiet() as caught:
            array = data[name]
        if not isinstance(array, np.ndarray):
            raise ImageError(f"cannot read the {name} object: {_reason(None, caught)}")
    if array.ndim == 2:
        bands = 1
        plane = array
    elif array.ndim == 3:
        bands = int(array.shape[0])
        plane = array[(band or 1) - 1] if 1 <= (band or 1) <= bands else None
    else:
        raise ImageError(f"the {name} object has {array.ndim} dimensions, not an image")
    if plane is None:
        raise ImageError(f"has {bands} band(s); --band {band} is out of range")
    if band is not None and bands == 1 and band != 1:
        raise ImageError(f"has 1 band; --band {band} is out of range")
    if plane.size == 0:
        raise ImageError(f"the {name} object is empty ({'x'.join(map(str, plane.shape))})")
    bits = _sample_bits(data, name)
    levels = _upright(samples_to_levels(plane), data, name)
    identity = {"standard": standard, "object": name, "band": (band or 1) if bands > 1 else 1, "bands": bands}
    identity["sample_bits"] = bits or int(plane.dtype.itemsize * 8)
    identity.update(_identity(data))
    return Product(np.ascontiguousarray(levels), identity, _stem(identity, path), bits)


def _image_object(data: Any) -> str:
    """The product's image object: PDS3 ``IMAGE`` (else the first ``*IMAGE*`` pointer),
    PDS4 the first array the label describes."""
    names = [n for n in data.keys() if not _SKIPPED_OBJECTS.search(n)]
    if data.standard == "PDS3":
        images = [n for n in names if n.upper() == "IMAGE"] or [n for n in names if "IMAGE" in n.upper()]
        if images:
            return images[0]
        raise ImageError(f"the PDS3 label points to no IMAGE object (objects: {', '.join(data.keys()) or 'none'})")
    for name in names:
        with _quiet():
            try:
                if issubclass(data.type_of(name), np.ndarray):
                    return name
            except Exception:
                continue
    raise ImageError("the PDS4 label describes no image array (Array_2D_Image or Array_3D_Image)")


def _check_length(data: Any, name: str, path: str | os.PathLike[str]) -> None:
    """The data file must exist and hold what the label declares (PDS3: FILE_RECORDS of an
    attached label, and the image object from its pointer on; PDS4: the array from its
    offset on): a cut download is refused with the sizes, not read as a shorter image."""
    try:
        target = data._target_path(name)
    except Exception:
        target = None
    if target is None:
        raise ImageError(f"the data file of the {name} object is missing ({_expected_file(data, name)})")
    if not isinstance(target, (str, os.PathLike)):
        return
    size = os.path.getsize(target)
    if data.standard == "PDS4":
        needed = _pds4_bytes(data.metadata, name)
        if needed is not None and needed > size:
            raise ImageError(f"truncated: the {name} array needs {needed} bytes, {Path(target).name} has {size}")
        return
    block = data.metablock_(name) or {}
    record_bytes = _int(data.metaget_("RECORD_BYTES"))
    file_records = _int(data.metaget_("FILE_RECORDS"))
    attached = os.path.realpath(target) == os.path.realpath(path)
    if record_bytes and file_records and attached and size < record_bytes * file_records:
        raise ImageError(
            f"truncated: the label declares {file_records} records of {record_bytes} bytes "
            f"({file_records * record_bytes} bytes), the file has {size}"
        )
    lines, samples = _int(block.get("LINES")), _int(block.get("LINE_SAMPLES"))
    bits, bands = _int(block.get("SAMPLE_BITS")) or 8, _int(block.get("BANDS")) or 1
    if not (lines and samples):
        return
    line_bytes = (
        samples * max(1, bits // 8) + _int(block.get("LINE_PREFIX_BYTES")) + _int(block.get("LINE_SUFFIX_BYTES"))
    )
    needed = lines * line_bytes * bands
    start = _pointer_start(data.metaget_(f"^{name}"), record_bytes)
    if start is not None and start + needed > size:
        raise ImageError(
            f"truncated: the {name} object needs {needed} bytes from byte {start} "
            f"({lines} lines x {samples} samples x {bits} bits x {bands} band(s)), the file has {size}"
        )


def _expected_file(data: Any, name: str) -> str:
    try:
        if data.standard == "PDS4":
            return Path(data._pds4_structures[name].parent_filename).name
        names = data._object_to_filename(name)
        return Path(str(names[0] if isinstance(names, (list, tuple)) else names)).name
    except Exception:
        return "not found beside the label"


_PDS4_TYPE_BYTES = {"byte": 1, "2": 2, "4": 4, "8": 8, "single": 4, "double": 8}


def _pds4_bytes(metadata: Mapping, name: str) -> int | None:
    """Bytes a PDS4 array needs in its file: offset + elements x element size."""
    for key, block in _walk(metadata):
        if not key.split(":")[-1].startswith("Array") or not isinstance(block, Mapping):
            continue
        if str(block.get("local_identifier", "")).replace(" ", "_") != name:
            continue
        axes = [v for k, v in block.items() if k == "Axis_Array" and isinstance(v, Mapping)]
        kind = str((block.get("Element_Array") or {}).get("data_type", "")).lower()
        size = next((n for suffix, n in _PDS4_TYPE_BYTES.items() if kind.endswith(suffix)), None)
        if not axes or size is None:
            return None
        count = int(np.prod([_int(axis.get("elements")) for axis in axes]))
        return _int(block.get("offset")) + count * size
    return None


_PDS3_INTEGERS = {
    **dict.fromkeys(("MSB_UNSIGNED_INTEGER", "UNSIGNED_INTEGER", "SUN_UNSIGNED_INTEGER", "MAC_UNSIGNED_INTEGER"), ">u"),
    **dict.fromkeys(("LSB_UNSIGNED_INTEGER", "PC_UNSIGNED_INTEGER", "VAX_UNSIGNED_INTEGER"), "<u"),
    **dict.fromkeys(("MSB_INTEGER", "INTEGER", "SUN_INTEGER", "MAC_INTEGER"), ">i"),
    **dict.fromkeys(("LSB_INTEGER", "PC_INTEGER", "VAX_INTEGER"), "<i"),
}
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".z", ".zst")


def plain_pds3_image(data: Any, name: str) -> np.ndarray | None:
    """A PDS3 image in the plain layout read straight from its file: uncompressed 8- or
    16-bit integer samples, one band or band-sequential, lines of LINE_PREFIX_BYTES +
    samples + LINE_SUFFIX_BYTES from the ``^IMAGE`` pointer on. None for any other layout,
    which ``pdr``'s loader reads (it also knows mission-specific quirks). Gives the array
    ``pdr`` gives (tests/test_archives.py compares them) at a fraction of its per-product
    cost, so an archive of plain products runs about as fast as PNG files."""
    block = data.metablock_(name)
    if data.standard != "PDS3" or not isinstance(block, Mapping):
        return None
    kind = _PDS3_INTEGERS.get(str(block.get("SAMPLE_TYPE", "")).strip().strip('"').upper())
    bits, bands = _int(block.get("SAMPLE_BITS")), _int(block.get("BANDS", 1))
    lines, samples = _int(block.get("LINES")), _int(block.get("LINE_SAMPLES"))
    storage = str(block.get("BAND_STORAGE_TYPE", "BAND_SEQUENTIAL")).strip().strip('"').upper()
    if kind is None or bits not in (8, 16) or bands < 1 or not (lines and samples) or storage != "BAND_SEQUENTIAL":
        return None
    if any("ITEMS" in str(key) for key in block):  # ISIS-style side, bottom or back planes
        return None
    try:
        target = data._target_path(name)
    except Exception:
        return None
    if not isinstance(target, (str, os.PathLike)) or str(target).lower().endswith(_COMPRESSED):
        return None
    start = _pointer_start(data.metaget_(f"^{name}"), _int(data.metaget_("RECORD_BYTES")))
    if start is None:
        return None
    word = bits // 8
    prefix, suffix = _int(block.get("LINE_PREFIX_BYTES")), _int(block.get("LINE_SUFFIX_BYTES"))
    line_bytes = prefix + samples * word + suffix
    with open(target, "rb") as handle:
        handle.seek(start)
        raw = handle.read(bands * lines * line_bytes)
    if len(raw) < bands * lines * line_bytes:
        return None  # pdr's loader reports the short read
    rows = np.frombuffer(raw, np.uint8).reshape(bands * lines, line_bytes)[:, prefix : prefix + samples * word]
    image = np.ascontiguousarray(rows).view(np.dtype(f"{kind}{word}")).reshape(bands, lines, samples)
    return image[0] if bands == 1 else image


def _pointer_start(pointer: Any, record_bytes: int) -> int | None:
    """The byte offset a PDS3 ``^IMAGE`` pointer gives: a record number (1-based), a
    ``<BYTES>`` value, or a (file, position) pair."""
    if isinstance(pointer, (tuple, list)) and pointer:
        pointer = pointer[-1]
    if isinstance(pointer, dict):  # {"value": n, "units": "BYTES"}
        units = str(pointer.get("units", "")).upper()
        value = _int(pointer.get("value"))
        return value - 1 if units == "BYTES" else (value - 1) * record_bytes if record_bytes else None
    value = _int(pointer)
    if not value:
        return None
    return (value - 1) * record_bytes if record_bytes else None


def _sample_bits(data: Any, name: str) -> int | None:
    """Significant bits per sample: the set bits of a SAMPLE_BIT_MASK, else SAMPLE_BITS
    (PDS3, or a PDS4 ``sample_bits``/``sample_bit_mask``); None when not declared."""
    if data.standard == "PDS3":
        block = data.metablock_(name) or {}
        mask, bits = block.get("SAMPLE_BIT_MASK"), block.get("SAMPLE_BITS")
    else:
        found = dict(_fields(data.metadata, ("sample_bit_mask", "sample_bits")))
        mask, bits = found.get("sample_bit_mask"), found.get("sample_bits")
    from_mask = _bit_mask(mask)
    if from_mask:
        return from_mask
    bits = _int(bits)
    return bits or None


def _bit_mask(mask: Any) -> int | None:
    """How many bits a PDS bit mask sets: an int, or ODL radix notation ``2#0000111111111111#``."""
    if mask is None:
        return None
    if isinstance(mask, int):
        return bin(mask).count("1") or None
    text = str(mask).strip().strip('"')
    found = re.fullmatch(r"(\d+)#([0-9A-Fa-f]+)#", text)
    try:
        value = int(found.group(2), int(found.group(1))) if found else int(text, 0)
    except ValueError:
        return None
    return bin(value).count("1") or None


def _upright(gray: np.ndarray, data: Any, name: str) -> np.ndarray:
    """Flips the image the way the label says it displays (PDS3 SAMPLE/LINE_DISPLAY_DIRECTION,
    PDS4 Display_2D_Image): masks line up with the frame as a viewer shows it."""
    if data.standard == "PDS3":
        block = data.metablock_(name) or {}
        horizontal = str(block.get("SAMPLE_DISPLAY_DIRECTION", "RIGHT")).upper()
        vertical = str(block.get("LINE_DISPLAY_DIRECTION", "DOWN")).upper()
        mirrored, upside_down = horizontal == "LEFT", vertical == "UP"
    else:
        found = dict(_fields(data.metadata, ("horizontal_display_direction", "vertical_display_direction")))
        mirrored = str(found.get("horizontal_display_direction", "")).lower().startswith("right to left")
        upside_down = str(found.get("vertical_display_direction", "")).lower().startswith("bottom to top")
    if mirrored:
        gray = gray[:, ::-1]
    if upside_down:
        gray = gray[::-1]
    return gray


# Identity ----------------------------------------------------------------------------------


def _identity(data: Any) -> dict[str, Any]:
    """The label's product id, instrument, sol and spacecraft clock, those it declares."""
    found: dict[str, Any] = {}
    if data.standard == "PDS3":
        for field, keys in _PDS3_KEYS.items():
            value = next((v for v in (data.metaget_(k) for k in keys) if v not in (None, "", "N/A", "UNK")), None)
            if value is not None:
                found[field] = _plain(value)
        return found
    wanted = {name: field for field, names in _PDS4_KEYS.items() for name in names}
    for key, value in _fields(data.metadata, tuple(wanted)):
        found.setdefault(wanted[key], _plain(value))
    if isinstance(found.get("sol"), str) and found["sol"].isdigit():
        found["sol"] = int(found["sol"])  # XML text; PDS3 labels give a number
    lid = data.metaget_("logical_identifier")
    if lid:
        found["product_id"] = str(lid).split(":")[-1]
        found["logical_identifier"] = str(lid)
    instrument = _pds4_instrument(data.metadata)
    if instrument:
        found["instrument_id"] = instrument
    return {field: found[field] for field in (*IDENTITY_FIELDS, "logical_identifier") if field in found}


def _pds4_instrument(metadata: Mapping) -> str | None:
    for key, value in _walk(metadata):
        if key.split(":")[-1] == "Observing_System_Component" and isinstance(value, Mapping):
            if str(value.get("type", "")).lower() == "instrument" and value.get("name"):
                return str(value["name"])
    return None


def _fields(metadata: Mapping, names: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """(name, value) of every scalar field whose name, without namespace, is in ``names``."""
    for key, value in _walk(metadata):
        bare = key.split(":")[-1].lower()
        if bare in names and not isinstance(value, Mapping):
            yield bare, value


def _walk(mapping: Mapping) -> Iterator[tuple[str, Any]]:
    items = mapping.items() if hasattr(mapping, "items") else []
    for key, value in items:
        yield str(key), value
        if isinstance(value, Mapping):
            yield from _walk(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, Mapping):
                    yield from _walk(item)


def _stem(identity: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    product_id = str(identity.get("product_id") or "").strip().strip('"')
    safe = _STEM_UNSAFE.sub("_", product_id).strip("._")
    return safe or Path(path).stem


def _plain(value: Any) -> Any:
    """A label value as JSON: numbers stay numbers, anything else its text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value).strip().strip('"')


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class _quiet(warnings.catch_warnings):
    """Collects pdr's warnings (it reports unreadable objects as warnings) instead of
    printing them; the messages explain a failed read."""

    def __init__(self) -> None:
        super().__init__(record=True)

    def __enter__(self) -> list[warnings.WarningMessage]:
        caught = super().__enter__()
        warnings.simplefilter("always")
        return caught  # type: ignore[return-value]


def _reason(exc: BaseException | None, caught: list[warnings.WarningMessage]) -> str:
    messages = [first_line(Exception(str(w.message))) for w in caught if "Unable" in str(w.message)]
    if exc is not None:
        return first_line(exc, name_unknown=True)
    return messages[-1] if messages else "the label does not describe data this file holds"

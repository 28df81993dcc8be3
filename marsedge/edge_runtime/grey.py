"""Frames as uint8 (H, W) grey arrays, from what a camera pipeline hands over.

Kept apart from :mod:`.imageio` so the Python API never imports Pillow.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import ImageError


def to_gray8(image: np.ndarray) -> np.ndarray:
    """Converts an array to uint8 (H, W) grey, as :func:`.imageio.load_gray` does for files.

    Accepts (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16.

    Raises:
        ImageError: another shape or dtype, or an empty image.
    """
    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if array.dtype != np.uint8:
        raise ImageError(f"expected uint8 or uint16 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[:, :, 0] if array.shape[2] == 1 else _luma(array[:, :, :3])
    if array.ndim != 2:
        raise ImageError(f"expected an (H, W) grey or (H, W, 3) RGB image, got shape {array.shape}")
    if array.size == 0:
        raise ImageError(f"empty image of shape {array.shape}")
    return array


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma with Pillow's fixed-point rounding, so arrays match files."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


BIT_DEPTHS = ("auto", 8, 10, 12, 16)


def check_bit_depth(bit_depth: str | int) -> str | int:
    """``bit_depth`` as ``"auto"`` or an int of :data:`BIT_DEPTHS` ("12" is 12).

    Raises:
        ValueError: another value.
    """
    text = str(bit_depth).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit() and int(text) in BIT_DEPTHS:
        return int(text)
    raise ValueError(f"bit_depth must be auto, 8, 10, 12 or 16, got {bit_depth!r}")


def frame_bit_depth(image: np.ndarray, bit_depth: str | int = "auto") -> int:
    """The significant bits of a frame's pixels: 8 for uint8; for uint16, ``bit_depth``
    when given, else (``"auto"``) 10 when no value exceeds 1023, 12 when none exceeds
    4095 (a 10- or 12-bit sensor's frame stored in 16 bits), else 16.

    Raises:
        ImageError: a pixel exceeds the given bit depth.
    """
    array = np.asarray(image)
    if array.dtype != np.uint16:
        return 8
    top = int(array.max()) if array.size else 0
    if bit_depth == "auto":
        return 10 if top <= 1023 else 12 if top <= 4095 else 16
    depth = int(bit_depth)
    if top > (1 << depth) - 1:
        raise ImageError(
            f"16-bit frame has values up to {top}, above the {(1 << depth) - 1} of {depth}-bit pixels "
            f"(bit depth {depth}); give its real bit depth or auto"
        )
    return depth


def frame_to_gray8(
    image: np.ndarray, bit_depth: str | int = "auto", declared_bits: int | None = None
) -> tuple[np.ndarray, int]:
    """:func:`to_gray8` for a frame of ``bit_depth`` significant bits (:func:`frame_bit_depth`):
    uint16 levels 0 .. 2**depth - 1 are scaled to 0..255 (16 bits: as :func:`to_gray8`).
    Returns the grey frame and the depth used.

    ``declared_bits`` is the depth the frame's own description states (a PDS label's
    ``SAMPLE_BITS`` or bit mask): with ``"auto"`` it is used instead of guessing from the
    maximum, and levels above it are clipped (only those bits carry signal). A given
    ``bit_depth`` overrides it.

    Raises:
        ImageError: not an image :func:`to_gray8` takes, or pixels above the given bit depth.
    """
    array = np.asarray(image)
    bit_depth = check_bit_depth(bit_depth)
    if array.dtype == np.uint16 and bit_depth == "auto" and declared_bits and 8 <= declared_bits <= 16:
        depth = int(declared_bits)
        if depth < 16:
            array = np.minimum(array, np.uint16((1 << depth) - 1))
    else:
        depth = frame_bit_depth(array, bit_depth)
    return levels_to_gray8(array, depth), depth


def levels_to_gray8(image: np.ndarray, depth: int) -> np.ndarray:
    """The one rounding rule from ``depth``-bit levels to 8-bit grey, for every source
    (16-bit PNGs, PDS samples, mono16 bag messages): uint16 levels 0 .. 2**depth - 1 map
    onto 0..255 as ``round(v * 255 / (2**depth - 1))``, half up (16 bits: as
    :func:`to_gray8`); uint8 frames pass as they are. Levels must not exceed the depth.

    Raises:
        ImageError: not an image :func:`to_gray8` takes.
    """
    array = np.asarray(image)
    if array.dtype == np.uint16 and depth < 16:
        array = _level_table(depth)[array]
    return to_gray8(array)


@functools.cache
def _level_table(depth: int) -> np.ndarray:
    """uint8 level of each ``depth``-bit level, rounded half up: ``round(v * 255 / (2**depth - 1))``."""
    top = (1 << depth) - 1
    return ((np.arange(top + 1, dtype=np.int64) * 510 + top) // (2 * top)).astype(np.uint8)

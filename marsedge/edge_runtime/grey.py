"""Frames as uint8 (H, W) grey arrays, from what a camera pipeline hands over.

Kept apart from :mod:`.imageio` so the Python API never imports Pillow.
"""

from __future__ import annotations

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

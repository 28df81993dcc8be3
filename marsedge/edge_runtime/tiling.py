"""Overlapping sliding tiles over a frame, and the blending weights that stitch them.

A frame larger than the model input is covered by tiles that overlap by ``overlap``
pixels; the last tile of a row or column is aligned to the frame's edge, so every pixel is
covered and no tile hangs off the frame. Logits of overlapping tiles are averaged with
weights that ramp linearly across the overlap, so a pixel near a tile's edge (where the
model saw zero padding instead of its neighbours) counts less than one in the middle of
the neighbouring tile, which hides seams.
"""

from __future__ import annotations

import numpy as np


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length >= tile`` pixels.

    Consecutive tiles overlap by at least ``overlap`` pixels (the last one by more when
    the stride does not divide the length).
    """
    if length < tile:
        raise ValueError(f"length {length} is smaller than the tile {tile}; pad first")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in 0..{tile - 1}, got {overlap}")
    stride = tile - overlap
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] != length - tile:
        origins.append(length - tile)
    return origins


def ramp(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights for one tile: 1..overlap up from each edge, flat in between.

    Two tiles overlapping by ``overlap`` pixels have weights summing to a constant there,
    a linear cross-fade. Every weight is positive, so each pixel keeps a prediction.
    """
    steps = np.arange(tile)
    return np.minimum(np.minimum(steps + 1, tile - steps), max(overlap, 1)).astype(np.float32)


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pads a 2-D image at the bottom/right, mirroring it, to at least ``height x width``.

    Mirroring keeps textures plausible for the model, unlike a flat border.
    """
    pad_y = max(height - image.shape[0], 0)
    pad_x = max(width - image.shape[1], 0)
    if not pad_y and not pad_x:
        return image
    # "symmetric" works for any size, including a single row or column.
    return np.pad(image, ((0, pad_y), (0, pad_x)), mode="symmetric")

"""Resizing frames to the model's ground resolution and masks back to the frame's size.

A model trained on tiles cut from 256-px NavCam frames reduced 2x sees a whole frame 128
pixels across; its metadata says so with ``input.model_pixels_per_frame``, and a frame of
any size is resized to that (:class:`marsedge.core.metadata.FieldOfView`). The frame is
reduced by area averaging (what a k x k binning does) before tiling, and the mask is
brought back to the frame's size by nearest neighbour, so it holds class ids only.

Cost (2-core AMD EPYC, under load): a 2048x2048 frame to 128x128 takes ~1.3 ms (Pillow's
``Image.reduce``, exact for power-of-two factors), 1280x960 to 128x96 ~2 ms (integer block
sums); the float path for other factors is kept for exactness.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The size of a ``height x width`` frame at ``scale`` model pixels per source pixel
    (rounded half up, at least one pixel)."""
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes a uint8 (H, W) image by area averaging: each output pixel is the mean of the
    source area it covers (fractional pixels weighted by the part covered), rounded half up.

    Reducing by an integer factor k is the mean of k x k blocks; enlarging repeats pixels.
    """
    if image.shape == (height, width):
        return image
    in_height, in_width = image.shape
    if in_height % height == 0 and in_width % width == 0 and image.dtype == np.uint8:
        kh, kw = in_height // height, in_width // width
        if _power_of_two(kh) and _power_of_two(kw):
            # Pillow's reduce rounds block means half up like the float path for these
            # factors (checked bit for bit in the tests) and is several times faster.
            return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce((kw, kh)))
        sums = image.reshape(height, kh, width, kw).sum(axis=(1, 3), dtype=np.uint32)
        return ((2 * sums + kh * kw) // (2 * kh * kw)).astype(np.uint8)  # mean, rounded half up
    rows = _resize_axis(image.astype(np.float32), height, axis=0)
    return np.floor(_resize_axis(rows, width, axis=1) + 0.5).astype(np.uint8)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes a (h, w) class-id mask to (height, width), each pixel taking the class of the
    mask pixel its centre falls in (no blending: the result holds ids of the input only)."""
    if mask.shape == (height, width):
        return mask
    # Each mask row (column) is repeated as often as output centres fall in it: the same
    # pixels as indexing by centre, about 4x faster at 128 -> 1024 px.
    rows = nearest_repeats(mask.shape[0], height)
    cols = nearest_repeats(mask.shape[1], width)
    return np.repeat(np.repeat(mask, rows, axis=0), cols, axis=1)


def nearest_repeats(n_in: int, n_out: int) -> np.ndarray:
    """How many of ``n_out`` output samples :func:`resize_nearest` takes from each of
    ``n_in`` input samples (int64, summing to ``n_out``)."""
    return np.bincount(_nearest_index(n_in, n_out), minlength=n_in)


def nearest_weights(shape: tuple[int, int], height: int, width: int) -> np.ndarray:
    """Output pixels of a ``height x width`` :func:`resize_nearest` per pixel of a mask of
    ``shape`` (float64): a sum over the mask weighted by them equals the sum over the
    resized mask, without making it."""
    return np.outer(nearest_repeats(shape[0], height), nearest_repeats(shape[1], width)).astype(np.float64)


def _power_of_two(k: int) -> bool:
    return k > 0 and k & (k - 1) == 0


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)
    return np.minimum(centres.astype(np.int64), n_in - 1)


def _resize_axis(values: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Area-averages float32 ``values`` along ``axis`` to ``n_out`` samples."""
    n_in = values.shape[axis]
    if n_in == n_out:
        return values
    moved = np.moveaxis(values, axis, 0)
    out = np.empty((n_out,) + moved.shape[1:], dtype=np.float32)
    step = n_in / n_out
    if n_in % n_out == 0:  # whole blocks: one reshape, exact
        k = n_in // n_out
        out[:] = moved.reshape((n_out, k) + moved.shape[1:]).mean(axis=1, dtype=np.float64)
        return np.moveaxis(out, 0, axis)
    for i in range(n_out):
        start, stop = i * step, (i + 1) * step
        first, last = math.floor(start), min(math.ceil(stop), n_in)
        index = np.arange(first, last)
        weights = (np.minimum(index + 1, stop) - np.maximum(index, start)) / (stop - start)
        out[i] = np.tensordot(weights, moved[first:last].astype(np.float64), axes=1)
    return np.moveaxis(out, 0, axis)

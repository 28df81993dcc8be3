"""Samples of archive frames as the levels the bit-depth handling takes.

PDS products and bag messages hold 8- to 16-bit integer samples of any byte order and
signedness. :func:`samples_to_levels` turns them into uint8 or uint16 levels; the depth
those levels are read with (``--bit-depth``, ``SegmenterOptions.bit_depth``) and the
rounding onto 8-bit grey are :func:`.grey.frame_to_gray8`'s, the same as for a 16-bit PNG.
A 16-bit container often holds fewer significant bits (a 12-bit NavCam product stored as
16-bit samples, ``SAMPLE_BITS = 12`` or a bit mask in its label): with ``auto`` the
label's bits are used, so a 12-bit frame is not left nearly black.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImageError
from ..grey import frame_to_gray8


def samples_to_levels(samples: np.ndarray) -> np.ndarray:
    """uint8 levels from 8-bit samples, native uint16 levels from 16-bit ones; negative
    samples (signed types) are clipped to 0.

    Raises:
        ImageError: floating-point or wider-than-16-bit samples.
    """
    array = np.asarray(samples)
    if array.dtype.kind == "f":
        raise ImageError(f"{array.dtype.name} samples are not supported: 8- to 16-bit integer samples only")
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 2:
        raise ImageError(f"{array.dtype} samples are not supported: 8- to 16-bit integer samples only")
    if array.dtype.itemsize == 1:
        return np.clip(array, 0, 255).astype(np.uint8) if array.dtype.kind == "i" else array.astype(np.uint8)
    if array.dtype.kind == "i":
        return np.clip(array, 0, None).astype(np.uint16)
    return array.astype(np.uint16, copy=array.dtype != np.uint16)


def samples_to_gray8(samples: np.ndarray, sample_bits: int | None = None, bit_depth: str | int = "auto") -> np.ndarray:
    """uint8 grey from integer samples holding ``sample_bits`` significant bits (None: not
    declared), read with ``bit_depth`` as :func:`.grey.frame_to_gray8` does.

    Raises:
        ImageError: as :func:`samples_to_levels`, or samples above a given ``bit_depth``.
    """
    return frame_to_gray8(samples_to_levels(samples), bit_depth, sample_bits)[0]

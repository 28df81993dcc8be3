"""Samples wider than 8 bits as the 8-bit grey the model takes.

The one place archive readers (PDS products, 16-bit bag messages) turn their samples into
uint8. A 16-bit container often holds fewer significant bits (a 12-bit NavCam product
stored as 16-bit samples, ``SAMPLE_BITS = 12`` or a bit mask in its label): the full
range of those bits maps onto 0..255, so a 12-bit frame is not left nearly black.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImageError
from ..grey import to_gray8


def samples_to_gray8(samples: np.ndarray, sample_bits: int | None = None) -> np.ndarray:
    """uint8 grey from integer samples holding ``sample_bits`` significant bits.

    8-bit samples pass unchanged. Wider samples with ``sample_bits`` of 16 or unknown are
    scaled as a 16-bit PNG is (:func:`.grey.to_gray8`, 0..65535 onto 0..255); with fewer
    declared bits (e.g. 12), 0..2**bits - 1 maps onto 0..255 (rounded) and larger values
    are clipped. Negative samples (signed types) are clipped to 0.

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
    wide = np.clip(array.astype(np.int32), 0, 65535)
    if sample_bits is None or not 8 <= sample_bits < 16:
        return to_gray8(wide.astype(np.uint16))
    top = (1 << sample_bits) - 1
    return ((np.minimum(wide, top) * 255 + top // 2) // top).astype(np.uint8)

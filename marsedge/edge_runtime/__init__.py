"""marsedge edge runtime: segment Mars terrain with a marsedge .tflite, no TensorFlow.

Depends only on numpy, Pillow and a LiteRT interpreter (``ai_edge_litert``, else
``tflite_runtime``). Typical use::

    from marsedge.edge_runtime import Segmenter
    segmenter = Segmenter()            # the bundled int8 model
    result = segmenter.segment(frame)  # uint8 (H, W) grey frame, any size
    result.mask, result.class_fractions, result.timings
    result.confidence                  # each pixel's calibrated confidence, 0..1
    result.degraded, result.quality    # the frame measured blurred or noisy: navcam-robust ran
"""

from .errors import ImageError, ModelError
from .metadata import ClassInfo, embed_metadata, read_metadata
from .segmenter import DEFAULT_MODEL, Segmentation, Segmenter, SegmenterOptions

__all__ = [
    "DEFAULT_MODEL",
    "ClassInfo",
    "ImageError",
    "ModelError",
    "Segmentation",
    "Segmenter",
    "SegmenterOptions",
    "embed_metadata",
    "read_metadata",
]

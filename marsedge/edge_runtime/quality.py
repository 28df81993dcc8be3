"""How degraded a frame looks to the network: sensor noise and blur, in the terms of the
frame the network sees (grey, resized to the model's ground resolution).

A model file may name a partner for degraded frames (metadata ``degraded_route``): the
bundled default (``navcam``) segments a frame that measures blurred or noisy with
``navcam-robust`` and every other frame with itself, one network per frame
(docs/research.md, "Routing degraded frames").

- ``noise``: grey levels of white sensor noise as the network sees it. Immerkaer's estimate
  (the mean absolute response to a 3x3 kernel that cancels planes and edges, times
  sqrt(pi/2) / 6) on 8x8 blocks of the frame **as given**, where ground texture is weakest
  against pixel noise, the 10th percentile of the blocks (the flattest ground; blocks that
  read a black or white pixel, a border or lines lost in downlink or saturation, left
  out), times the resize factor when the frame is reduced: area-averaging k x k pixels
  divides white noise by k. At most 24 x 24 blocks, spread evenly over the frame, are
  read, so a large frame costs what a small one does.
- ``sharpness``: the mean absolute Laplacian of the frame at the model's resolution over
  that of the frame reduced 2x more. A blur removes the finest detail first, so the ratio
  falls (clean NavCam frames at 128 px: 0.71-1.24 on 98% of the val split; a blur of
  radius 1 at 256 px: 0.54-0.75).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError
from .resample import resize_area, scaled_size

BLOCK = 8
BLOCK_PERCENTILE = 10
SAMPLED_BLOCKS = 24  # blocks read per side, at most
_NOISE_GAIN = math.sqrt(math.pi / 2) / 6  # Immerkaer (1996): mean |response| to sigma


@dataclass(frozen=True)
class FrameQuality:
    """The two measures of the module docstring."""

    noise: float
    sharpness: float

    def as_dict(self) -> dict[str, float]:
        return {"noise": round(self.noise, 3), "sharpness": round(self.sharpness, 3)}


def _laplacian(image: np.ndarray) -> np.ndarray:
    centre = image[1:-1, 1:-1]
    return image[:-2, 1:-1] + image[2:, 1:-1] + image[1:-1, :-2] + image[1:-1, 2:] - 4 * centre


def frame_quality(gray: np.ndarray, scale: float = 1.0, model_view: np.ndarray | None = None) -> FrameQuality:
    """Noise and sharpness of a uint8 (H, W) frame that the network sees resized by
    ``scale`` (model pixels per frame pixel); ``model_view``: the frame so resized, when
    the caller has it (a frame enlarged to the model's resolution is measured as given: an
    enlargement repeats pixels). Frames too small to measure (under 10 pixels a side)
    measure as clean: noise 0, sharpness 1."""
    if model_view is None or scale >= 1.0:
        model_view = gray if scale >= 1.0 else resize_area(gray, *scaled_size(*gray.shape, scale))
    return FrameQuality(_noise(gray) * min(scale, 1.0), _sharpness(model_view))


def _noise(gray: np.ndarray) -> float:
    height, width = gray.shape
    span = BLOCK + 2  # a block's 8x8 responses read 10x10 pixels
    if min(height, width) < span:
        return 0.0
    rows = np.linspace(0, height - span, min((height - 2) // BLOCK, SAMPLED_BLOCKS)).round().astype(np.intp)
    cols = np.linspace(0, width - span, min((width - 2) // BLOCK, SAMPLED_BLOCKS)).round().astype(np.intp)
    steps = np.arange(span)
    ny, nx = len(rows), len(cols)
    # the blocks' footprints, side by side: (ny * 10, nx * 10), then one axis pair per block
    picked = gray[(rows[:, None] + steps).ravel()][:, (cols[:, None] + steps).ravel()]
    clipped = ((picked == 0) | (picked == 255)).reshape(ny, span, nx, span).any(axis=3).any(axis=1).ravel()
    # the kernel over the stitched footprints at once; each block keeps the 8x8 responses
    # that read its own 10x10 pixels (the rest straddle two footprints)
    image = picked.astype(np.float32)
    response = np.zeros_like(image)
    rows_diff = image[:, :-2] - 2 * image[:, 1:-1] + image[:, 2:]
    response[:-2, :-2] = np.abs(rows_diff[:-2] - 2 * rows_diff[1:-1] + rows_diff[2:])
    own = response.reshape(ny, span, nx, span)[:, :BLOCK, :, :BLOCK]
    blocks = own.sum(axis=3).sum(axis=1).ravel()[~clipped]
    if not blocks.size:
        return 0.0
    kth = (blocks.size - 1) * BLOCK_PERCENTILE // 100
    return float(np.partition(blocks, kth)[kth]) / (BLOCK * BLOCK) * _NOISE_GAIN


def _sharpness(gray: np.ndarray) -> float:
    height, width = gray.shape
    if min(height, width) < BLOCK + 2:
        return 1.0
    image = gray.astype(np.float32)
    fine = float(np.abs(_laplacian(image)).mean())
    h2, w2 = height // 2 * 2, width // 2 * 2
    reduced = (image[0:h2:2, 0:w2:2] + image[1:h2:2, 0:w2:2] + image[0:h2:2, 1:w2:2] + image[1:h2:2, 1:w2:2]) * 0.25
    coarse = float(np.abs(_laplacian(reduced)).mean())
    return fine / coarse if coarse > 0 else 1.0


@dataclass(frozen=True)
class DegradedRoute:
    """A model file's partner for degraded frames: ``model``, a file name beside it (its
    SHA-256 ``sha256``), runs every frame whose noise is over ``max_noise`` grey levels or
    whose sharpness is under ``min_sharpness``."""

    model: str
    sha256: str
    max_noise: float
    min_sharpness: float

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> DegradedRoute | None:
        """The route a model's metadata states, or None.

        Raises:
            ModelError: ``degraded_route`` is not a well-formed route.
        """
        route = metadata.get("degraded_route")
        if route is None:
            return None
        try:
            model, sha256 = route["model"], route["sha256"]
            max_noise, min_sharpness = float(route["max_noise"]), float(route["min_sharpness"])
        except (TypeError, KeyError, ValueError):
            raise ModelError(
                f"degraded_route needs model, sha256, max_noise and min_sharpness, got {route!r}"
            ) from None
        if not isinstance(model, str) or "/" in model or "\\" in model or not model.endswith(".tflite"):
            raise ModelError(f"degraded_route.model must name a .tflite file beside the model, got {model!r}")
        if not (math.isfinite(max_noise) and math.isfinite(min_sharpness)):
            raise ModelError("degraded_route: max_noise and min_sharpness must be finite numbers")
        return cls(model, str(sha256), max_noise, min_sharpness)

    def degraded(self, quality: FrameQuality) -> bool:
        return quality.noise > self.max_noise or quality.sharpness < self.min_sharpness

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

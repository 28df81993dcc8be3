"""How degraded a frame looks to the network: sensor noise and blur, measured on the frame
as the model sees it (grey, resized to the model's ground resolution), so a 1024-px frame
whose noise the 8x reduction averages away measures as clean.

A model file may name a partner for degraded frames (metadata ``degraded_route``): the
bundled default (``navcam``) segments a frame that measures blurred or noisy with
``navcam-robust`` and every other frame with itself, one network per frame
(docs/research.md, "Routing degraded frames").

- ``noise``: grey levels of sensor noise, Immerkaer's estimate (the mean absolute response
  to a 3x3 kernel that cancels planes and edges, times sqrt(pi/2) / 6) taken over 8x8
  blocks, the 10th percentile of the blocks (the lower one of two neighbours; blocks that
  read a black or white pixel left out): the flattest ground, where texture adds least.
- ``sharpness``: the mean absolute Laplacian of the frame over that of the frame reduced
  2x. A blur removes the finest detail first, so the ratio falls (clean NavCam frames at
  128 px: 0.71-1.24 on 98% of the val split; a blur of radius 1 at 256 px: 0.54-0.75).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError

BLOCK = 8
BLOCK_PERCENTILE = 10
_NOISE_GAIN = math.sqrt(math.pi / 2) / 6  # Immerkaer (1996): mean |response| to sigma


@dataclass(frozen=True)
class FrameQuality:
    """The two measures of the module docstring."""

    noise: float
    sharpness: float

    def as_dict(self) -> dict[str, float]:
        return {"noise": round(self.noise, 3), "sharpness": round(self.sharpness, 3)}


def _second_difference(image: np.ndarray) -> np.ndarray:
    """Immerkaer's kernel [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]: a [1, -2, 1] difference
    along each axis in turn (valid part, 2 pixels smaller each way)."""
    rows = image[:, :-2] - 2 * image[:, 1:-1] + image[:, 2:]
    return rows[:-2] - 2 * rows[1:-1] + rows[2:]


def _laplacian(image: np.ndarray) -> np.ndarray:
    centre = image[1:-1, 1:-1]
    return image[:-2, 1:-1] + image[2:, 1:-1] + image[1:-1, :-2] + image[1:-1, 2:] - 4 * centre


def frame_quality(gray: np.ndarray) -> FrameQuality:
    """Noise and sharpness of a uint8 (H, W) frame at the model's resolution. Frames too
    small to measure (under 10 pixels a side) measure as clean: noise 0, sharpness 1."""
    height, width = gray.shape
    if min(height, width) < BLOCK + 2:
        return FrameQuality(0.0, 1.0)
    image = gray.astype(np.float32)
    response = np.abs(_second_difference(image))
    rows, cols = response.shape[0] // BLOCK, response.shape[1] // BLOCK
    cut = response[: rows * BLOCK, : cols * BLOCK]
    blocks = cut.reshape(rows, BLOCK, cols * BLOCK).sum(axis=1).reshape(rows, cols, BLOCK).sum(axis=2).ravel()
    # a block that reads a black or white pixel (a border, lines lost in downlink, saturation)
    # measures clipping, not noise: left out (the sums of its 10x10 footprint, from an
    # integral image of the clipped pixels)
    clipped = np.zeros((height + 1, width + 1), dtype=np.int32)
    clipped[1:, 1:] = ((gray == 0) | (gray == 255)).cumsum(axis=0).cumsum(axis=1)
    top, left = np.arange(rows)[:, None] * BLOCK, np.arange(cols)[None, :] * BLOCK
    span = BLOCK + 2
    touched = (
        clipped[top + span, left + span] - clipped[top, left + span] - clipped[top + span, left] + clipped[top, left]
    )
    blocks = blocks[touched.ravel() == 0]
    kth = (blocks.size - 1) * BLOCK_PERCENTILE // 100
    noise = float(np.partition(blocks, kth)[kth]) / (BLOCK * BLOCK) * _NOISE_GAIN if blocks.size else 0.0
    fine = float(np.abs(_laplacian(image)).mean())
    h2, w2 = height // 2 * 2, width // 2 * 2
    reduced = (image[0:h2:2, 0:w2:2] + image[1:h2:2, 0:w2:2] + image[0:h2:2, 1:w2:2] + image[1:h2:2, 1:w2:2]) * 0.25
    coarse = float(np.abs(_laplacian(reduced)).mean())
    return FrameQuality(noise, fine / coarse if coarse > 0 else 1.0)


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
        return {
            "model": self.model,
            "sha256": self.sha256,
            "max_noise": self.max_noise,
            "min_sharpness": self.min_sharpness,
        }

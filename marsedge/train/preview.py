"""PNG grid of image / truth / prediction for a fixed set of validation tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from marsedge.core.atomic import atomic_path
from marsedge.core.classes import CLASS_COLORS

PALETTE = np.array(CLASS_COLORS, dtype=np.uint8)


def choose_preview_tiles(masks: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Pick ``count`` tile indices, half of them with big rock (class 4) when available."""
    rng = np.random.default_rng(seed)
    has_rock = np.flatnonzero((masks == 4).reshape(len(masks), -1).any(axis=1))
    others = np.setdiff1d(np.arange(len(masks)), has_rock)
    rocks = rng.permutation(has_rock)[: count // 2]
    rest = rng.permutation(others)[: count - len(rocks)]
    return np.sort(np.concatenate([rocks, rest]).astype(np.int64))


def colorize(mask: np.ndarray) -> np.ndarray:
    return PALETTE[np.clip(mask, 0, len(PALETTE) - 1)]


def write_preview(path: str | Path, images: np.ndarray, truths: np.ndarray, predictions: np.ndarray) -> Path:
    """Write rows of [image | truth | prediction] atomically."""
    rows = []
    gap = np.full((images.shape[1], 4, 3), 255, dtype=np.uint8)
    for image, truth, prediction in zip(images, truths, predictions):
        grey = np.repeat(image[..., None], 3, axis=2)
        rows.append(np.concatenate([grey, gap, colorize(truth), gap, colorize(prediction)], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, dtype=np.uint8))
    grid = np.concatenate(rows[:-1], axis=0) if rows else np.zeros((1, 1, 3), np.uint8)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)

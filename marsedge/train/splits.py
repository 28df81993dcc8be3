"""The train/val/test split of a data file, and the settings derived from its training part.

Deterministic: the same config and data file give the same split, so export, eval, bench
and distillation find a run's tiles again by reading the file (``split.npz`` holds indices
into the whole file, also when ``limit`` picks a subset).
"""

from __future__ import annotations

import numpy as np

from marsedge.core.classes import CLASS_NAMES
from marsedge.errors import MarsEdgeError
from marsedge.train.config import TrainConfig
from marsedge.train.data import (
    class_pixel_shares,
    class_weights,
    clean_tiles,
    file_sha256,
    frame_groups,
    load_tiles,
    stratified_split,
)


def compute_split(config: TrainConfig):
    """Load and clean ``config.data`` and split it as a run with ``config`` would; writes nothing.

    Returns the tiles, the split indices (into the whole file; "train", "val", "test",
    "dropped"), the derived settings (normalisation, class weights, ...) and the data
    file's sha256. Deterministic: the same config and file give the same split.

    Raises:
        MarsEdgeError: unreadable data, or too few usable tiles.
    """
    tiles = load_tiles(config.data, config.frame_pixels)
    data_hash = file_sha256(config.data)
    if config.split_from:
        return _inherited_split(config, tiles, data_hash)
    # split.npz holds indices into the whole data file, also when --limit picks a subset,
    # so export, eval and bench find the same tiles by reading the file again.
    split_seed = config.seed if config.split_seed is None else config.split_seed
    selected = (
        _random_frames(tiles, config.limit, split_seed)
        if config.limit and config.limit < len(tiles)
        else np.arange(len(tiles))
    )
    work = tiles.subset(selected)
    keep, report = clean_tiles(work) if config.clean else (np.arange(len(work)), None)
    groups = frame_groups(work.images) if work.sources is None else np.arange(len(work))
    split_local = stratified_split(
        work.masks[keep], groups[keep], config.val_fraction, config.test_fraction, split_seed
    )
    split = {name: selected[keep[index]] for name, index in split_local.items()}
    split["dropped"] = selected[np.array(report.dropped if report else [], dtype=np.int64)]
    if len(split["train"]) == 0 or len(split["val"]) == 0:
        raise MarsEdgeError(f"{config.data}: too few usable tiles ({len(keep)}) to split into train and validation")
    derived = _derive(config, tiles, split, len(work), report.summary() if report else None)
    derived["frame_grouping"] = "pairs" if groups[-1] != len(groups) - 1 else "tiles"
    return tiles, split, derived, data_hash


def _inherited_split(config: TrainConfig, frames, data_hash: str):
    """compute_split for frames that take the split of the tile file ``config.split_from``
    (frame k gave tiles 2k and 2k+1): a frame goes where its tiles went; dropped if both were."""
    _, tile_split, _, _ = compute_split(tile_split_config(config))
    tile_count = sum(len(v) for v in tile_split.values())
    if tile_count != 2 * len(frames):
        raise MarsEdgeError(
            f"{config.split_from}: {tile_count} tiles, but {config.data} has {len(frames)} frames; "
            "split_from needs the tile file cut from exactly these frames (two tiles each)"
        )
    assignment = np.full(len(frames), -1)
    for code, name in enumerate(("train", "val", "test")):
        assignment[tile_split[name] // 2] = code
    split = {name: np.flatnonzero(assignment == code) for code, name in enumerate(("train", "val", "test"))}
    split["dropped"] = np.flatnonzero(assignment < 0)
    derived = _derive(config, frames, split, len(frames), {"inherited_from": str(config.split_from)})
    derived["frame_grouping"] = "frames"
    return frames, split, derived, data_hash


def tile_split_config(config: TrainConfig) -> TrainConfig:
    """The config whose split a ``split_from`` run inherits (and its teachers must share)."""
    return config.replace(data=config.split_from, split_from=None, frame_pixels=128)


def _derive(config: TrainConfig, tiles, split, used: int, cleaning) -> dict:
    train_images, train_masks = tiles.images[split["train"]], tiles.masks[split["train"]]
    mean, std = float(train_images.mean()), float(max(train_images.std(), 1.0))
    output_classes = [1, 2, 3, 4] if config.ignore_background else [0, 1, 2, 3, 4]
    derived = {
        "input_shape": list(tiles.images.shape[1:]),
        "mean": mean,
        "std": std,
        "output_classes": output_classes,
        "class_names": list(CLASS_NAMES),
        "class_weights": class_weights(train_masks, config.class_weighting, config.ignore_background).tolist(),
        "class_pixel_shares": class_pixel_shares(train_masks).tolist(),
        "tiles_loaded": len(tiles),
        "tiles_used": used,
        "split_sizes": {name: int(len(split[name])) for name in ("train", "val", "test")},
        "cleaning": cleaning,
        "whole_frames": tiles.sources is not None,
        **({"frames_skipped": tiles.skipped} if tiles.skipped else {}),
    }
    return derived


def _random_frames(tiles, count: int, seed: int) -> np.ndarray:
    """Indices of about ``count`` tiles drawn as whole frames at random (sorted), for quick runs."""
    groups = frame_groups(tiles.images)
    order = np.random.default_rng(seed).permutation(np.unique(groups))
    sizes = np.bincount(groups)
    chosen = order[: int(np.searchsorted(np.cumsum(sizes[order]), count) + 1)]
    return np.flatnonzero(np.isin(groups, chosen))[:count]

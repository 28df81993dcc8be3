"""Reading a run directory written by ``marsedge train`` (used by export, eval and bench)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsedge.errors import RunDirError
from marsedge.train.config import TrainConfig
from marsedge.train.data import TileSet, load_tiles

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.npz"
BEST_WEIGHTS = "best.weights.h5"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
STATE_FILE = "state.json"
PREVIEW_FILE = "preview.png"


@dataclass(frozen=True)
class RunInfo:
    """What a finished (or running) training run recorded."""

    path: Path
    config: TrainConfig
    derived: dict
    data_sha256: str

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.derived["input_shape"])  # type: ignore[return-value]

    @property
    def output_classes(self) -> list[int]:
        return list(self.derived["output_classes"])

    def metrics(self) -> dict:
        path = self.path / METRICS_FILE
        return json.loads(path.read_text()) if path.exists() else {}


def read_run(run_dir: str | Path, need_weights: bool = True) -> RunInfo:
    """Read and check a run directory.

    Raises:
        RunDirError: naming the directory and the missing or broken file.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory not found")
    required = [CONFIG_FILE, SPLIT_FILE] + ([BEST_WEIGHTS] if need_weights else [])
    missing = [name for name in required if not (path / name).exists()]
    if missing:
        raise RunDirError(
            f"{path}: incomplete run directory, missing {', '.join(missing)} (did `marsedge train` finish an epoch?)"
        )
    try:
        raw = json.loads((path / CONFIG_FILE).read_text())
        config = TrainConfig.from_dict(_with_legacy_defaults(raw["train"]))
        return RunInfo(path, config, raw["derived"], raw.get("data_sha256", ""))
    except (KeyError, ValueError, TypeError) as exc:
        raise RunDirError(f"{path / CONFIG_FILE}: not a marsedge run config ({exc})") from None


# A run's config.json lists every field, so a missing one predates it: the run was built
# with the default of its marsedge version, not the current one.
_LEGACY_MODEL_DEFAULTS = {"stem_stride": 1}


def _with_legacy_defaults(train: dict) -> dict:
    """A run config's "train" dict with the fields it predates set as that run was built."""
    model = {**_LEGACY_MODEL_DEFAULTS, **(train.get("model") or {})}
    return {**train, "model": model}


def split_indices(run: RunInfo) -> dict[str, np.ndarray]:
    with np.load(run.path / SPLIT_FILE) as split:
        return {name: split[name] for name in split.files}


def split_fingerprint(split: dict[str, np.ndarray], data_sha256: str) -> dict[str, str]:
    """sha256 of the data file and of each split's tile indices: what an export records as ``source_split``.

    Two runs (or a run and an exported file) with the same fingerprint trained, validated
    and tested on the same tiles.
    """
    digests = {
        name: hashlib.sha256(np.asarray(split.get(name, ()), dtype="<i8").tobytes()).hexdigest()
        for name in ("train", "val", "test")
    }
    return {"data_sha256": data_sha256, **digests}


def split_tiles(run: RunInfo, split: str, data: str | Path | None = None) -> TileSet:
    """Tiles of one split ("train", "val" or "test") of the run's data file."""
    indices = split_indices(run)
    if split not in indices:
        raise RunDirError(f"{run.path / SPLIT_FILE}: no '{split}' split (have {', '.join(indices)})")
    tiles = load_tiles(data or run.config.data, run.config.frame_pixels)
    if len(indices[split]) and indices[split].max() >= len(tiles):
        raise RunDirError(f"{run.path}: split indices exceed the {len(tiles)} tiles of {tiles.source}")
    return tiles.subset(indices[split])


def load_model(run: RunInfo, weights: str | Path | None = None):
    """Rebuild the run's Keras model and load its best weights."""
    from marsedge.train.model import build_unet

    model = build_unet(
        run.config.model,
        input_shape=run.input_shape,
        num_outputs=len(run.output_classes),
        mean=run.derived["mean"],
        std=run.derived["std"],
    )
    model.load_weights(str(weights or run.path / BEST_WEIGHTS))
    return model

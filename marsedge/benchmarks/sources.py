"""Which models ``marsedge bench`` measures, and the labelled tiles it scores them on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.benchmarks.settings import EXPORT_DIR, FORMAT_ORDER, BenchError, BenchSettings
from marsedge.edge_runtime import ModelError, read_metadata
from marsedge.errors import UsageError
from marsedge.train.data import TileSet, load_tiles


@dataclass
class Candidate:
    """One model to benchmark."""

    label: str
    format: str
    kind: str  # "keras" or "tflite"
    path: Path
    run: Any = None  # RunInfo of the run it came from, if any
    tta: bool = False  # segmented with test-time flip averaging

    @property
    def size_kb(self) -> float:
        return round(self.path.stat().st_size / 1024, 1)


def discover(settings: BenchSettings) -> tuple[list[Candidate], list[Any]]:
    """The models named by ``settings.sources`` and the runs among them, in table order.

    A run directory contributes its Keras model (when ``settings.keras`` and the weights
    exist) and every .tflite in ``RUN/export``; a folder without a run config contributes
    its .tflite files; a file must be a marsedge .tflite.

    Raises:
        BenchError: a source is missing, holds no model, or a file is not a marsedge model.
    """
    from marsedge.train import rundir

    candidates: list[Candidate] = []
    runs = []
    for source in settings.sources:
        path = Path(source)
        if path.is_dir() and (path / rundir.CONFIG_FILE).exists():
            run = rundir.read_run(path, need_weights=False)
            runs.append(run)
            found = []
            if settings.keras and (path / rundir.BEST_WEIGHTS).exists():
                found.append(Candidate("keras", "keras", "keras", path / rundir.BEST_WEIGHTS, run))
            found += [_tflite(p, run) for p in sorted((path / EXPORT_DIR).glob("*.tflite"))]
            if not found:
                raise BenchError(f"{path}: no models (no {EXPORT_DIR}/*.tflite; run `marsedge export {path}` first)")
            candidates += found
        elif path.is_dir():
            files = sorted(path.glob("*.tflite"))
            if not files:
                raise BenchError(f"{path}: no .tflite files and not a run directory")
            candidates += [_tflite(p, None) for p in files]
        elif path.is_file():
            candidates.append(_tflite(path, None))
        else:
            raise BenchError(f"{path}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for candidate in candidates:
        key = candidate.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    unique.sort(key=lambda c: FORMAT_ORDER.index(c.format) if c.format in FORMAT_ORDER else len(FORMAT_ORDER))
    _disambiguate(unique, multiple_runs=len(runs) > 1)
    if settings.tta:
        unique = [
            twin
            for c in unique
            for twin in (
                [c, Candidate(f"{c.label} +TTA", c.format, c.kind, c.path, c.run, tta=True)]
                if c.kind == "tflite"
                else [c]
            )
        ]
    return unique, runs


def _tflite(path: Path, run: Any) -> Candidate:
    try:
        metadata = read_metadata(path)
    except ModelError as exc:
        raise BenchError(f"{path}: {exc}") from None
    precision = str(metadata.get("precision") or path.stem)
    return Candidate(precision, precision, "tflite", path, run)


def _disambiguate(candidates: list[Candidate], multiple_runs: bool) -> None:
    """Gives every candidate its own label (reports are keyed by it): the format, then where
    the file comes from, with as many of its parent folders as tell same-named files apart."""
    counts = Counter(c.label for c in candidates)
    for c in candidates:
        if counts[c.label] > 1 or multiple_runs:
            origin = c.run.path.name if c.run is not None and multiple_runs else c.path.stem
            c.label = f"{c.format} ({origin})"
    for depth in range(1, 64):
        counts = Counter(c.label for c in candidates)
        if max(counts.values(), default=1) == 1:
            return
        for c in candidates:
            if counts[c.label] > 1:
                parts = c.path.resolve().with_suffix("").parts
                c.label = f"{c.format} ({'/'.join(parts[-1 - depth :])})"


@dataclass(frozen=True)
class ScoredTiles:
    """The labelled tiles every model is scored on.

    Attributes:
        tiles: the tiles.
        where: a line saying where they come from.
        split: the split scored ("train", "val", "test" or "all"); None for a data file
            the models have no split of.
        trained: how many of them the models trained on; None when unknown.
        warning: a line labelling a score that is not a held-out one, or None.
    """

    tiles: TileSet
    where: str
    split: str | None
    trained: int | None
    warning: str | None


def evaluation_tiles(settings: BenchSettings, runs: Sequence[Any], candidates: Sequence[Candidate] = ()) -> ScoredTiles:
    """The labelled tiles every model is scored on (see :attr:`BenchSettings.split`).

    Raises:
        BenchError: nothing names labelled tiles, or a split the models do not know.
        MarsEdgeError: the data is unreadable, or a recorded split does not reproduce.
    """
    from marsedge.evaluation.evaluate import trained_warning

    split: str | None
    if runs:
        tiles, index, splits, split, where, why = _run_tiles(settings, runs[0])
    else:
        tiles, index, splits, split, where, why = _file_tiles(settings, candidates)
    trained = None if splits is None else int(np.isin(index, splits.get("train", ())).sum())
    tiles = tiles.subset(index)
    if not len(tiles):
        raise BenchError(f"no tiles in the {where}")
    if 0 < settings.tiles < len(tiles):
        picked = np.unique(np.linspace(0, len(tiles) - 1, settings.tiles).round().astype(np.int64))
        trained = None if trained is None else int(np.isin(index[picked], splits.get("train", ())).sum())
        tiles = tiles.subset(picked)
        where += f", {len(tiles)} evenly spaced"
    return ScoredTiles(tiles, where, split, trained, trained_warning(trained, len(tiles), split or "all", why))


def _run_tiles(settings: BenchSettings, run: Any):
    from marsedge.train import rundir

    split = settings.run_split
    from marsedge.datapaths import run_data

    data = settings.data or run_data(run.path) or run.config.data  # the run's own data, found from here
    splits = rundir.split_indices(run)
    tiles = load_tiles(data, run.config.frame_pixels)
    index = np.arange(len(tiles)) if split == "all" else splits[split]
    if len(index) and index.max() >= len(tiles):
        raise BenchError(f"{data}: has {len(tiles)} tiles but run {run.path} splits {index.max() + 1}+")
    return tiles, index, splits, split, f"{split} split of {run.path} ({data})", ""


def _file_tiles(settings: BenchSettings, candidates: Sequence[Candidate]):
    """Tiles for .tflite files alone: their recorded split of their training data, else every tile."""
    import json

    from marsedge.evaluation.evaluate import recipe_split
    from marsedge.train.data import file_sha256

    data = settings.data or settings.default_data
    if data is None:
        raise BenchError(
            "no labelled tiles to score: give a run directory or --data FILE "
            "(the default, $MARSEDGE_DATA or ../shared/data/mars_terrain_64x128.npz, is absent)"
        )
    metadata = [read_metadata(c.path) for c in candidates if c.kind == "tflite"]
    recipes = {
        json.dumps({k: v for k, v in (m.get("split") or {}).items() if k != "sizes"}, sort_keys=True) for m in metadata
    }
    why = "the models' metadata carries no split recipe"
    splits = None
    if len(recipes) > 1:
        why = "the models were trained on different splits or carry no split recipe"
    elif metadata and metadata[0].get("split"):
        if file_sha256(data) == metadata[0]["split"]["data_sha256"]:
            tiles, splits = recipe_split(metadata[0], data)
        else:
            why = f"{data} is not {metadata[0]['split']['data_file']}, the models' training data"
    split = settings.split
    if splits is None:
        if split not in (None, "all"):
            raise UsageError(
                f"--split {split} picks a split of the models' training data, and {why}: "
                f"name the run (marsedge bench RUN_DIR) or drop --split to score every tile of {data}"
            )
        tiles = load_tiles(data)
        return tiles, np.arange(len(tiles)), None, None, f"all tiles of {data}", why
    split = split or "test"
    index = np.arange(len(tiles)) if split == "all" else splits[split]
    return tiles, index, splits, split, f"{split} split of {data} (recomputed from the models' split recipe)", why

"""The table of training runs (``marsedge runs``): one row per run directory.

Read with :mod:`marsedge.train.rundir` (config.json, metrics.json, history.csv): what
differs from the baseline's config, parameters, MACs, epochs (best), training time and
throughput, val and test mean IoU (classes 1..4), test IoU per class, and the change in
val and test mean IoU against the baseline run (the first, unless another is named).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from marsedge.core.classes import CLASS_NAMES
from marsedge.errors import RunDirError
from marsedge.train import rundir

CLASSES = CLASS_NAMES[1:]


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories among ``paths``: each path is a run directory, or a folder whose
    subfolders holding a config.json are taken in name order.

    Raises:
        RunDirError: a path is neither, or no run is found.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / rundir.CONFIG_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            inner = sorted(p for p in path.iterdir() if (p / rundir.CONFIG_FILE).is_file())
            if not inner:
                raise RunDirError(f"{path}: neither a run directory nor a folder of run directories")
            found.extend(inner)
        else:
            raise RunDirError(f"{path}: run directory not found")
    if not found:
        raise RunDirError("no run directories given")
    return found


def _flat(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _run(path: Path) -> dict:
    run = rundir.read_run(path, need_weights=False)
    metrics = run.metrics()
    if "val" not in metrics:
        raise RunDirError(f"{path}: no {rundir.METRICS_FILE} with val scores (has the run finished?)")
    rates: list[float] = []
    history = path / rundir.HISTORY_FILE
    if history.is_file():
        with open(history, newline="") as handle:
            rates = [float(row["images_per_s"]) for row in csv.DictReader(handle) if row.get("images_per_s")]
    return {"path": path, "config": _flat(run.config.to_dict()), "metrics": metrics,
            "img_s": sorted(rates)[len(rates) // 2] if rates else float("nan")}  # fmt: skip


def _changes(run: dict, baseline: dict) -> dict[str, Any]:
    ignored = {"out"}  # init_from stays: starting from another run's weights is a change
    return {
        key.removeprefix("model."): value
        for key, value in run["config"].items()
        if key not in ignored and baseline["config"].get(key) != value
    }


def runs_summary(paths: list[str | Path], baseline_path: str | Path | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per run (see the module docstring).

    Raises:
        RunDirError: a run directory is missing, incomplete or unfinished.
    """
    runs = [_run(Path(path)) for path in paths]
    baseline = _run(Path(baseline_path)) if baseline_path else runs[0]
    base_val = baseline["metrics"]["val"]["mean_iou"]
    base_test = baseline["metrics"].get("test", {}).get("mean_iou")
    rows = []
    for run in runs:
        metrics = run["metrics"]
        val = metrics["val"]["mean_iou"]
        test = metrics.get("test", {})
        test_miou = test.get("mean_iou")
        rows.append({
            "run": str(run["path"]),
            "changes": _changes(run, baseline),
            "parameters": metrics.get("parameters"),
            "macs_per_tile": metrics.get("macs_per_tile"),
            "epochs_run": metrics.get("epochs_run"),
            "best_epoch": metrics.get("best_epoch"),
            "train_minutes": metrics["wall_seconds"] / 60 if metrics.get("wall_seconds") is not None else None,
            "images_per_s": None if math.isnan(run["img_s"]) else run["img_s"],
            "val_miou": val,
            "val_delta": val - base_val,
            "test_miou": test_miou,
            "test_delta": test_miou - base_test if test_miou is not None and base_test is not None else None,
            "test_class_iou": {c: test.get("class_iou", {}).get(c) for c in CLASSES},
        })  # fmt: skip
    return rows


def _cell(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def runs_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`runs_summary` as a Markdown table."""
    lines = [
        "| run | change | params | MACs/tile | epochs (best) | train min | img/s | val mIoU | Δ val | test mIoU | Δ test | "
        + " | ".join(CLASSES) + " |",
        "|---" * (11 + len(CLASSES)) + "|",
    ]
    for row in rows:
        change = ", ".join(f"{key}={json.dumps(value)}" for key, value in row["changes"].items()) or "baseline"
        macs = None if row["macs_per_tile"] is None else row["macs_per_tile"] / 1e6
        lines.append(
            f"| {Path(row['run']).name} | {change} | {_cell(row['parameters'], ',')} | {_cell(macs, '.1f')} M | "
            f"{_cell(row['epochs_run'], '')} ({_cell(row['best_epoch'], '')}) | {_cell(row['train_minutes'], '.0f')} | "
            f"{_cell(row['images_per_s'], '.0f')} | {row['val_miou']:.3f} | {row['val_delta']:+.3f} | "
            f"{_cell(row['test_miou'], '.3f')} | {_cell(row['test_delta'], '+.3f')} | "
            + " | ".join(_cell(row["test_class_iou"][c], ".3f") for c in CLASSES) + " |"
        )
    return "\n".join(lines)


def table(paths: list[str | Path], baseline_path: str | Path | None = None) -> str:
    """:func:`runs_markdown` of :func:`runs_summary`."""
    return runs_markdown(runs_summary(paths, baseline_path))

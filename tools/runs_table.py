"""Print a Markdown table of training runs, one row per run directory.

    python tools/runs_table.py runs/abl_flips runs/abl_strong runs/abl_se ... [--baseline runs/abl_flips]

One row per run directory (read with ``marsedge.train.rundir``: config.json, metrics.json,
history.csv): what differs from the baseline's config, parameters, MACs, epochs (best),
training time and throughput, val and test mean IoU (classes 1..4) and test IoU per class,
and the change in val and test mean IoU against the baseline run.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from marsedge.train import rundir

CLASSES = ("soil", "bedrock", "sand", "big_rock")


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
    with open(path / rundir.HISTORY_FILE, newline="") as handle:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(handle) if row.get("images_per_s")]
    return {"path": path, "config": _flat(run.config.to_dict()), "metrics": run.metrics(),
            "img_s": sorted(rates)[len(rates) // 2] if rates else float("nan")}


def _difference(run: dict, baseline: dict) -> str:
    ignored = {"out"}  # init_from stays: starting from another run's weights is a change
    changed = [
        f"{key.removeprefix('model.')}={json.dumps(value)}"
        for key, value in run["config"].items()
        if key not in ignored and baseline["config"].get(key) != value
    ]
    return ", ".join(changed) or "baseline"


def table(paths: list[Path], baseline_path: Path | None = None) -> str:
    runs = [_run(path) for path in paths]
    baseline = _run(baseline_path) if baseline_path else runs[0]
    base_val = baseline["metrics"]["val"]["mean_iou"]
    base_test = baseline["metrics"].get("test", {}).get("mean_iou")
    lines = [
        "| run | change | params | MACs/tile | epochs (best) | train min | img/s | val mIoU | Δ val | test mIoU | Δ test | "
        + " | ".join(CLASSES) + " |",
        "|---" * (11 + len(CLASSES)) + "|",
    ]
    for run in runs:
        metrics = run["metrics"]
        val = metrics["val"]["mean_iou"]
        test = metrics.get("test", {})
        test_miou = test.get("mean_iou")
        per_class = [f"{test['class_iou'][c]:.3f}" if test.get("class_iou", {}).get(c) is not None else "—" for c in CLASSES]
        test_text = f"{test_miou:.3f}" if test_miou is not None else "—"
        delta_test = f"{test_miou - base_test:+.3f}" if test_miou is not None and base_test is not None else "—"
        lines.append(
            f"| {run['path'].name} | {_difference(run, baseline)} | {metrics['parameters']:,} | "
            f"{metrics['macs_per_tile'] / 1e6:.1f} M | {metrics['epochs_run']} ({metrics['best_epoch']}) | "
            f"{metrics['wall_seconds'] / 60:.0f} | {run['img_s']:.0f} | {val:.3f} | {val - base_val:+.3f} | "
            f"{test_text} | {delta_test} | " + " | ".join(per_class) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories; the first is the baseline unless --baseline")
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    print(table(args.runs, args.baseline))


if __name__ == "__main__":
    main()

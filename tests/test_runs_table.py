"""tools/runs_table.py: the experiment-log table read from run directories."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import load_tool
from marsedge.train.config import TrainConfig


def _tool():
    return load_tool("runs_table")


def _fake_run(path: Path, config: TrainConfig, val: float, test: float | None, legacy: bool = False) -> Path:
    path.mkdir()
    train = config.to_dict()
    if legacy:
        del train["model"]["stem_stride"]
    (path / "config.json").write_text(json.dumps({"train": train, "derived": {}}))
    np.savez(path / "split.npz", train=np.arange(2), val=np.arange(2, 3), test=np.arange(3, 4))
    ious = {"soil": 0.7, "bedrock": 0.9, "sand": 0.5, "big_rock": None}
    metrics = {"val": {"mean_iou": val}, "parameters": 1234, "macs_per_tile": 5e6, "epochs_run": 3, "best_epoch": 2,
               "wall_seconds": 120.0}
    if test is not None:
        metrics["test"] = {"mean_iou": test, "class_iou": ious}
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "history.csv").write_text("epoch,images_per_s\n1,10.0\n2,30.0\n3,20.0\n")
    return path


def test_rows_name_what_differs_from_the_baseline_and_the_deltas(tmp_path):
    base = TrainConfig(data="d.npz")
    runs = [
        _fake_run(tmp_path / "base", base, 0.50, 0.48),
        _fake_run(tmp_path / "se", base.replace(model={"squeeze_excitation": True}, out="x"), 0.53, 0.47),
        _fake_run(tmp_path / "old", base, 0.40, None, legacy=True),
    ]
    lines = _tool().table(runs).splitlines()
    assert len(lines) == 5 and all(line.count("|") == 16 for line in lines)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert cells[0][:2] == ["base", "baseline"] and cells[0][8] == "+0.000"
    assert cells[1][1] == "squeeze_excitation=true"  # "out" differs too but is not a change of recipe
    assert cells[1][8:11] == ["+0.030", "0.470", "-0.010"] and cells[1][-1] == "—"
    assert cells[1][5:7] == ["2", "20"]  # minutes, median images/s
    assert cells[2][1] == "stem_stride=1"  # a run from before stem_stride existed
    assert cells[2][9] == "—"

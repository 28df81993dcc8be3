"""marsedge runs: the table of training runs read from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marsedge.evaluation import runs as runs_table
from marsedge.train.config import TrainConfig


def _fake_run(path: Path, config: TrainConfig, val: float, test: float | None, legacy: bool = False) -> Path:
    path.mkdir()
    train = config.to_dict()
    if legacy:
        del train["model"]["stem_stride"]
    (path / "config.json").write_text(json.dumps({"train": train, "derived": {}}))
    np.savez(path / "split.npz", train=np.arange(2), val=np.arange(2, 3), test=np.arange(3, 4))
    ious = {"soil": 0.7, "bedrock": 0.9, "sand": 0.5, "big_rock": None}
    metrics = {
        "val": {"mean_iou": val},
        "parameters": 1234,
        "macs_per_tile": 5e6,
        "epochs_run": 3,
        "best_epoch": 2,
        "wall_seconds": 120.0,
    }
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
    lines = runs_table.table(runs).splitlines()
    assert len(lines) == 5 and all(line.count("|") == 16 for line in lines)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert cells[0][:2] == ["base", "baseline"] and cells[0][8] == "+0.000"
    assert cells[1][1] == "squeeze_excitation=true"  # "out" differs too but is not a change of recipe
    assert cells[1][8:11] == ["+0.030", "0.470", "-0.010"] and cells[1][-1] == "—"
    assert cells[1][5:7] == ["2", "20"]  # minutes, median images/s
    assert cells[2][1] == "stem_stride=1"  # a run from before stem_stride existed
    assert cells[2][9] == "—"


def test_marsedge_runs_prints_the_table_and_json(tmp_path):
    from typer.testing import CliRunner

    from marsedge.cli import app

    base = TrainConfig(data="d.npz")
    folder = tmp_path / "runs"
    folder.mkdir()
    _fake_run(folder / "a_base", base, 0.50, 0.48)
    _fake_run(folder / "b_wide", base.replace(model={"base_filters": 32}), 0.55, 0.50)
    runner = CliRunner()
    result = runner.invoke(app, ["runs", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["run"]).name for r in rows] == ["a_base", "b_wide"]
    assert rows[1]["changes"] == {"base_filters": 32} and rows[1]["val_delta"] == pytest.approx(0.05)
    assert rows[1]["test_class_iou"]["big_rock"] is None and rows[0]["images_per_s"] == 20.0
    result = runner.invoke(app, ["runs", str(folder / "b_wide"), "--baseline", str(folder / "a_base")])
    assert result.exit_code == 0, result.output
    assert "| b_wide | base_filters=32 |" in result.stdout and "+0.050" in result.stdout


def test_marsedge_runs_names_a_missing_or_unfinished_run(tmp_path):
    from typer.testing import CliRunner

    from marsedge.cli import app

    result = CliRunner().invoke(app, ["runs", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "nope: run directory not found" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["runs", str(empty)])
    assert result.exit_code == 1 and "neither a run directory nor a folder" in result.stderr

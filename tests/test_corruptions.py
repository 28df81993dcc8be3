"""The corruption benchmark (``marsedge eval --corruptions``): seeded, deterministic
corruptions of whole labelled frames, a row per corruption and severity, shares of the
clean score, JSON and a plot, and one-line errors for data it cannot use."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from marsedge.benchmarks.corruptions import CORRUPTIONS, corruption_render, corruption_table, markdown
from marsedge.benchmarks.frames import read_ai4mars_frames
from marsedge.cli import app
from marsedge.edge_runtime import Segmenter
from marsedge.train.synthetic import write_ai4mars

runner = CliRunner()


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ai4mars")
    write_ai4mars(root, count=3, size=128, seed=5)
    return root


def test_corruptions_are_seeded_and_grow_with_severity(golden_frame):
    image = golden_frame[:64, :128]
    mask = np.ones_like(image)
    for corruption in CORRUPTIONS:
        if corruption.name in ("size", "gamma"):
            continue
        changes = []
        for level in corruption.levels:
            first, _ = corruption_render(corruption, level, seed=1)(image, mask)
            again, _ = corruption_render(corruption, level, seed=1)(image, mask)
            assert np.array_equal(first, again), corruption.name
            assert first.shape == image.shape and first.dtype == np.uint8
            changes.append(np.abs(first.astype(int) - image).mean())
        assert changes == sorted(changes), (corruption.name, changes)
    assert {c.name: len(c.levels) for c in CORRUPTIONS} == {"noise": 3, "blur": 3, "jpeg": 3, "gamma": 4, "size": 3}


def test_table_has_a_row_per_condition_and_is_deterministic(tiny_int8, frames_root):
    images, masks = read_ai4mars_frames(frames_root)
    segmenter = Segmenter(tiny_int8, threads=1)
    table = corruption_table(segmenter, images, masks, names=("noise", "gamma", "size"))
    again = corruption_table(segmenter, images, masks, names=("noise", "gamma", "size"))
    assert table == again
    assert [(r["corruption"], r["severity"]) for r in table["rows"]] == [
        ("noise", "mild"), ("noise", "middle"), ("noise", "worst"),
        ("gamma", "worst"), ("gamma", "middle"), ("gamma", "middle"), ("gamma", "worst"),
        ("size", "mild"), ("size", "middle"), ("size", "worst"),
    ]  # fmt: skip
    clean = table["clean"]["mean_iou"]
    for row in table["rows"]:
        assert row["share"] == pytest.approx(row["mean_iou"] / clean)
    assert table["middle_min_share"] == min(r["share"] for r in table["rows"] if r["severity"] == "middle")
    assert len(markdown({"int8": table}).splitlines()) == 3 + len(table["rows"]) + 2


def test_eval_corruptions_through_the_cli(tiny_int8, frames_root, tmp_path):
    plot, saved = tmp_path / "shares.png", tmp_path / "report.json"
    result = runner.invoke(
        app,
        ["eval", str(tiny_int8), "--corruptions", "--data", str(frames_root), "--split", "all", "--json",
         "--plot", str(plot), "--save-json", str(saved), "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 3 and report["split"] == "all"
    assert len(report["tables"]) == 2  # tiny_int8 and its tiny_float32 sibling
    assert json.loads(saved.read_text()) == report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_corruptions_needs_whole_frames(tiny_int8, tmp_path):
    result = runner.invoke(app, ["eval", str(tiny_int8), "--corruptions", "--data", str(tmp_path)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0] and "AI4Mars layout" in lines[0]


def test_a_runs_export_scores_its_runs_split(tiny_int8, tmp_path):
    """``marsedge eval RUN/export/FILE.tflite --corruptions --split val`` needs no --config:
    a file in a run's export folder was trained on that run's split."""
    import shutil

    from marsedge.benchmarks.corruptions import recipe_config

    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text("{}")
    exported = tmp_path / "run" / "export" / "marsedge_qat.tflite"
    shutil.copy(tiny_int8, exported)
    shutil.copy(tiny_int8, tmp_path / "loose.tflite")
    assert recipe_config(exported) == tmp_path / "run" / "config.json"
    assert recipe_config(tmp_path / "loose.tflite") is None

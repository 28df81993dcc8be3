"""`marsedge export` input checking: bad run directories and options fail in one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from marsedge.cli import app
from marsedge.export import ExportOptions
from marsedge.export.convert import ExportError, parse_formats
from marsedge.export.pipeline import accuracy_gate


def invoke(*args):
    return CliRunner().invoke(app, ["export", *[str(a) for a in args]], prog_name="marsedge")


def one_error(result, code: int = 1) -> str:
    """The one ``error:`` line of a failed command (exit 1: bad run directory; 2: bad options)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_missing_run_dir(tmp_path):
    assert one_error(invoke(tmp_path / "nope")) == f"error: {tmp_path / 'nope'}: run directory not found"


def test_incomplete_run_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    message = one_error(invoke(tmp_path))
    assert "incomplete run directory, missing split.npz, best.weights.h5" in message


def test_run_dir_with_a_broken_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"train": {"epochs": 3}}))
    np.savez(tmp_path / "split.npz", train=np.arange(3), val=np.arange(3, 4))
    (tmp_path / "best.weights.h5").write_bytes(b"")
    assert "config.json: not a marsedge run config" in one_error(invoke(tmp_path))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--formats", "float32,int4"], "unknown format int4; choose from float32, float16, dynamic, ptq, qat"),
        (["--no-int8", "--formats", "qat"], "--no-int8 conflicts with --formats qat"),
        (["--qat-fraction", "0"], "qat_fraction must be in (0, 1]"),
        (["--max-iou-drop", "-0.1"], "max_iou_drop must be in [0, 1)"),
    ],
)
def test_bad_options(tmp_path, args, message):
    assert message in one_error(invoke(tmp_path, *args), code=2)


def test_parse_formats_orders_and_checks():
    assert parse_formats(" qat,float32 ") == ("float32", "qat")
    with pytest.raises(ExportError, match="unknown format"):
        parse_formats("")


def _summary(float_miou: float, qat_miou: float) -> dict:
    return {"keras": {"val": {"mean_iou": float_miou}}, "formats": {"qat": {"val": {"mean_iou": qat_miou}}}}


def test_accuracy_gate():
    options = ExportOptions(max_iou_drop=0.01)
    assert accuracy_gate(_summary(0.60, 0.595), options)["passed"] is True
    failed = accuracy_gate(_summary(0.60, 0.585), options)
    assert failed["passed"] is False and failed["drop"] == pytest.approx(0.015)
    assert "accuracy gate failed" in failed["message"] and "drop 1.50 points, allowed drop 1.00" in failed["message"]
    assert accuracy_gate(_summary(0.60, 0.5), ExportOptions(gate=False))["passed"] is None
    gained = accuracy_gate(_summary(0.60, 0.635), options)  # int8 above float: a gain, not a negative drop
    assert gained["passed"] is True and "gain 3.50 points" in gained["message"] and "-3.50" not in gained["message"]
    assert accuracy_gate({"keras": {}, "formats": {}}, options)["checked"] is False

"""`marsedge export` end to end on tiny trained runs: full-integer int8 models, QAT parity,
metadata readable without TensorFlow, export.json, the table and `marsedge eval` agreeing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runs import make_tiny_run
from typer.testing import CliRunner

from marsedge.cli import app
from marsedge.edge_runtime.metadata import read_metadata

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
INT8 = ("ptq", "qat")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def attention_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs"), attention=True)


@pytest.fixture(scope="module")
def plain_export(tiny_run, tmp_path_factory):
    """All five formats of the plain tiny run, through the CLI."""
    out = tmp_path_factory.mktemp("export_plain")
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(out), "--no-gate"], prog_name="marsedge")
    assert result.exit_code == 0, result.output
    return out, result.stdout


@pytest.fixture(scope="module")
def attention_export(attention_run, tmp_path_factory):
    """The int8 formats of the squeeze-excitation + global-context run, through the library."""
    from marsedge.export import ExportOptions, export_run

    out = tmp_path_factory.mktemp("export_attention")
    export_run(attention_run, ExportOptions(formats=INT8, out=str(out), gate=False))
    return out


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=path.read_bytes(),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    return interpreter


@pytest.mark.parametrize("variant", ["plain", "attention"])
@pytest.mark.parametrize("fmt", INT8)
def test_int8_model_has_no_float_anywhere(variant, fmt, request):
    out = request.getfixturevalue(f"{variant}_export")
    out = out[0] if isinstance(out, tuple) else out
    interpreter = _interpreter(out / f"marsedge_{fmt}.tflite")
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and outp["dtype"] == np.int8
    scale, zero_point = inp["quantization"]
    norm = read_metadata(out / f"marsedge_{fmt}.tflite")["input"]["normalization"]
    assert norm["in_model"] is False and scale * norm["std"] == pytest.approx(1.0, abs=1e-3)  # a grey level per step
    assert abs(zero_point - (norm["mean"] - 128)) <= 0.5 + 1e-6  # so uint8 grey maps exactly
    float_tensors = [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] in (np.float32, np.float16)]
    assert float_tensors == []
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not ops & {"DEQUANTIZE", "QUANTIZE"}, ops
    assert "DEPTH_TO_SPACE" in ops and "TRANSPOSE_CONV" not in ops  # 2x2 stride-2 up-sampling, fast form
    # the reference kernels (arm64 parity check) load it too: int8 DEPTH_TO_SPACE is capped at version 1
    from marsedge.edge_runtime import Segmenter

    Segmenter(out / f"marsedge_{fmt}.tflite", reference_kernels=True).segment(np.zeros((64, 128), np.uint8))
    if variant == "attention":
        assert {"SOFTMAX", "LOGISTIC", "MEAN", "MUL"} <= ops


def test_tflite_int8_agrees_with_the_qat_keras_model(attention_run, attention_export):
    from marsedge.edge_runtime.tile_model import TileModel
    from marsedge.export.pipeline import QAT_WEIGHTS
    from marsedge.export.qat import load_qat_model
    from marsedge.train import rundir
    from marsedge.train.data import load_tiles
    from marsedge.train.predict import KerasTileModel

    run = rundir.read_run(attention_run)
    qat = load_qat_model(rundir.load_model(run), str(attention_export / QAT_WEIGHTS))
    tiles = load_tiles(run.config.data).images
    keras_masks = KerasTileModel(qat, run.output_classes, run.input_shape).predict_masks(tiles)
    tflite_masks = TileModel.from_file(attention_export / "marsedge_qat.tflite").predict_masks(tiles)
    assert (keras_masks == tflite_masks).mean() >= 0.98


def test_metadata_round_trips_without_tensorflow(plain_export, tiny_run):
    out, _ = plain_export
    script = (
        "import json, sys\n"
        "from marsedge.edge_runtime.metadata import read_metadata\n"
        "print(json.dumps([read_metadata(p) for p in sys.argv[1:]]))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras'))\n"
        "assert not bad, bad\n"
    )
    files = [out / f"marsedge_{fmt}.tflite" for fmt in ("float32", "float16", "dynamic", "ptq", "qat")]
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr
    documents = json.loads(proc.stdout)
    assert [d["precision"] for d in documents] == ["float32", "float16", "dynamic", "int8-ptq", "int8-qat"]
    config = json.loads((tiny_run / "config.json").read_text())
    for document in documents:
        assert document["format"] == "marsedge-tflite/2"
        assert document["input"]["height"] == 64 and document["input"]["width"] == 128
        assert document["input"]["model_pixels_per_frame"] == 128  # the run's frame_pixels
        assert "scale" not in document["input"]
        assert document["input"]["normalization"]["mean"] == pytest.approx(config["derived"]["mean"])
        assert document["input"]["normalization"]["std"] == pytest.approx(config["derived"]["std"])
        assert document["input"]["normalization"]["in_model"] is False  # the runtime's input table normalises
        assert [c["name"] for c in document["classes"]] == ["unlabeled", "soil", "bedrock", "sand", "big_rock"]
        assert document["output_classes"] == [1, 2, 3, 4]
        assert Path(document["source_run"]) == tiny_run.resolve()
        assert document["model_name"] == tiny_run.name  # the user's name for the model: its run directory's
        assert document["metrics"]["source_val"]["mean_iou"] > 0 and document["created"]
    quantization = documents[-1]["quantization"]["input"]  # one grey level per int8 step
    assert quantization["dtype"] == "int8" and quantization["shape"] == [1, 64, 128, 1]
    assert quantization["scale"] == pytest.approx(1.0 / config["derived"]["std"], rel=1e-4)
    assert abs(quantization["zero_point"] - (config["derived"]["mean"] - 128)) <= 0.5 + 1e-6


@pytest.mark.parametrize("fmt", INT8)
def test_int8_input_holds_every_grey_level(plain_export, tiny_run, fmt):
    """The normalisation left the graph (it was a MUL and an ADD that rounded grey levels
    together); the input table maps the 256 levels onto 256 distinct int8 values."""
    from marsedge.edge_runtime import Segmenter

    out, _ = plain_export
    interpreter = _interpreter(out / f"marsedge_{fmt}.tflite")
    first = interpreter._get_ops_details()[0]["op_name"]  # noqa: SLF001
    assert first == "CONV_2D"
    segmenter = Segmenter(out / f"marsedge_{fmt}.tflite")
    assert len(np.unique(segmenter._input_lut)) == 256  # noqa: SLF001


def test_export_json_and_table(plain_export):
    out, stdout = plain_export
    summary = json.loads((out / "export.json").read_text())
    assert list(summary["formats"]) == ["float32", "float16", "dynamic", "ptq", "qat"]
    sizes = {fmt: entry["size_bytes"] for fmt, entry in summary["formats"].items()}
    assert sizes["qat"] < sizes["float16"] < sizes["float32"]
    for entry in summary["formats"].values():
        assert (out / entry["file"]).stat().st_size == entry["size_bytes"]
        assert set(entry["val"]["class_iou"]) == {"soil", "bedrock", "sand", "big_rock"}
        assert 0 <= entry["val"]["agreement"] <= 1 and entry["ops"]
    assert summary["formats"]["float32"]["val"]["agreement"] > 0.999
    assert summary["formats"]["qat"]["input"]["dtype"] == "int8"
    assert (out / "marsedge_qat.weights.h5").exists() and summary["qat"]["epochs"] == 1
    assert summary["gate"]["checked"] is False
    header, rule, *rows = stdout.splitlines()[:8]
    assert header.split(" | ")[0].strip() == "format" and "agreement" in header and "big_rock" in header
    assert [row.split(" | ")[0].strip() for row in rows[:6]] == [
        "keras float32",
        "float32",
        "float16",
        "dynamic",
        "ptq",
        "qat",
    ]


def test_eval_reproduces_the_export_figures(plain_export, tiny_run):
    out, _ = plain_export
    summary = json.loads((out / "export.json").read_text())
    data = json.loads((tiny_run / "config.json").read_text())["train"]["data"]
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(out / "marsedge_qat.tflite"), "--data", data, "--split", "val", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mean_iou"] == pytest.approx(summary["formats"]["qat"]["val"]["mean_iou"])
    result = runner.invoke(app, ["eval", str(tiny_run), "--data", data, "--split", "val", "--json"])
    assert result.exit_code == 0, result.output
    keras_report = json.loads(result.stdout)
    assert keras_report["kind"] == "keras"
    assert keras_report["mean_iou"] == pytest.approx(summary["keras"]["val"]["mean_iou"])
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert keras_report["mean_iou"] == pytest.approx(metrics["val"]["mean_iou"])


def test_export_records_the_split_recipe_that_recomputes_the_runs_split(plain_export, tiny_run):
    from marsedge.evaluation.evaluate import recipe_split
    from marsedge.train import rundir

    out, _ = plain_export
    metadata = read_metadata(out / "marsedge_qat.tflite")
    run = rundir.read_run(tiny_run, need_weights=False)
    recipe = metadata["split"]
    assert recipe["data_file"] == Path(run.config.data).name and recipe["data_sha256"] == run.data_sha256
    assert (recipe["seed"], recipe["val_fraction"], recipe["test_fraction"]) == (
        run.config.seed,
        run.config.val_fraction,
        run.config.test_fraction,
    )
    _, split = recipe_split(metadata, run.config.data)  # from the file alone, no run directory
    for name, indices in rundir.split_indices(run).items():
        assert np.array_equal(split[name], indices), name


def test_quant_debug_tool_rows_per_op(tiny_run, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import quant_debug

    quant_debug.main([str(tiny_run), "--calib-tiles", "4", "--debug-tiles", "2"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows and rows[0][0] == "| CONV_2D"  # the graph starts at the first convolution
    assert all(float(row[3]) >= 0 for row in rows)
    quant_debug.main([str(tiny_run), "--calib-tiles", "4", "--debug-tiles", "2", "--keep-normalization"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows[:2]] == ["| MUL", "| ADD"]  # what exports held before


def test_each_file_carries_a_temperature_fitted_on_val_that_eval_reads(plain_export, tiny_run):
    out, _ = plain_export
    data = json.loads((tiny_run / "config.json").read_text())["train"]["data"]
    for fmt in ("float32", "qat"):
        path = out / f"marsedge_{fmt}.tflite"
        calibration = read_metadata(path)["calibration"]
        assert calibration["fitted_on"] == "val" and 0.05 <= calibration["temperature"] <= 20
        assert calibration["nll_after"] <= calibration["nll_before"]
        result = CliRunner().invoke(app, ["eval", str(path), "--data", data, "--split", "val", "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)["calibration"]
        assert report["temperature"] == calibration["temperature"]
        # every labelled val pixel of the tiny run is in the fit, so eval finds the same error
        assert report["calibrated"]["pixels"] == calibration["pixels"]
        assert report["calibrated"]["ece"] == pytest.approx(calibration["ece_after"], abs=1e-4)
        assert report["uncalibrated"]["ece"] == pytest.approx(calibration["ece_before"], abs=1e-4)

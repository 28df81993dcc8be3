"""marsedge bench: every column and file, the JSON schema, check mode, per-op profiling.

One small benchmark (the two tiny test models, 8 synthetic tiles, one thread, 3 runs) is
run once per module through the CLI; the other tests read its outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import load_tool
from typer.testing import CliRunner

from marsedge.benchmarks import bench, report
from marsedge.cli import app

# The tiny test U-Net's four convolutions, output pixels x kernel x channels in x out:
TINY_MACS = 64 * 128 * 9 * 1 * 8 + 32 * 64 * 9 * 8 * 16 + 64 * 128 * 9 * 24 * 8 + 64 * 128 * 8 * 4
STATS = {"mean", "std", "min", "p50", "p90", "p99", "n"}
QUICK = ["--threads", "1", "--runs", "1", "--warmup", "0", "--frame-runs", "0", "--no-rss", "--no-peak"]


def invoke(*args) -> object:
    return CliRunner().invoke(app, ["bench", *[str(a) for a in args]], prog_name="marsedge")


@pytest.fixture(scope="module")
def tiles_npz(tmp_path_factory) -> Path:
    from marsedge.train.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("bench_data") / "tiles.npz", 8, seed=0)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiles_npz, tiny_float32, tiny_int8):
    """The CLI run every test below reads: JSON on stdout, files in ``out``."""
    out = tmp_path_factory.mktemp("bench_out")
    doc = out / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nHand-written intro.\n")
    result = invoke(
        tiny_float32,
        tiny_int8,
        "--data",
        tiles_npz,
        "--threads",
        "1",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--frame-size",
        "128x256",
        "--frame-runs",
        "1",
        "--out",
        out,
        "--json",
        "--min-miou",
        "0",
        "--max-iou-drop",
        "1",
        "--write-doc",
        doc,
    )
    return result, out, doc


def test_cli_writes_every_file_and_passes_lenient_checks(bench_run):
    result, out, _ = bench_run
    assert result.exit_code == 0, result.stderr
    for name in ("benchmarks.md", "benchmarks.json", "benchmarks.png", "benchmarks.log"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads(result.stdout) == json.loads((out / "benchmarks.json").read_text())
    assert "1/" in result.stderr and "done" in result.stderr  # progress on stderr
    log = (out / "benchmarks.log").read_text().splitlines()
    tile_lines = [line for line in log if "tile_ms:" in line]
    assert len(tile_lines) == 2 and all(len(line.split(":")[1].split()) == 3 for line in tile_lines)


def test_table_has_every_column_filled(bench_run):
    _, out, _ = bench_run
    lines = (out / "benchmarks.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for column in (
        "format",
        "size KB",
        "mIoU",
        "IoU soil",
        "IoU bedrock",
        "IoU sand",
        "IoU big_rock",
        "agree %",
        "ms/tile p50",
        "ms/tile p99",
        "ms/frame",
        "FPS",
        "RSS MB",
        "GMAC/s (% float32 peak)",
        "speed-up vs float32",
        report.CHANGE_COLUMN,
    ):
        assert column in header, column
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:4]]
    assert [row[0] for row in rows] == ["float32", "int8-ptq"]
    for row in rows:
        assert len(row) == len(header)
        assert all(cell and cell != report.DASH for cell in row), row
    assert rows[0][header.index("speed-up vs float32")] == "1.00x"
    gmacs = header.index("GMAC/s (% float32 peak)")
    assert rows[0][gmacs].endswith("%)") and "%" not in rows[1][gmacs]  # no made-up int8 peak
    assert rows[0][header.index(report.CHANGE_COLUMN)] == "0.00"


def test_json_schema(bench_run):
    result, _, _ = bench_run
    data = json.loads(result.stdout)
    assert data["schema"] == bench.SCHEMA
    assert {"cpu", "machine", "logical_cpus", "memory_gb", "interpreter", "load_average"} <= set(data["machine"])
    assert data["command"].startswith("marsedge bench ") and "--runs 3" in data["command"]
    assert data["peak"][0]["threads"] == 1 and data["peak"][0]["float32_gmacs"] > 0
    assert "int8_gmacs_estimate" not in data["peak"][0]
    assert data["settings"]["tiles"] == 8 and data["settings"]["tile_size"] == [64, 128]
    assert data["reference"] == "float32"
    for model in data["models"]:
        assert model["kind"] == "tflite" and model["size_kb"] > 0
        assert model["macs_per_tile"] == TINY_MACS
        accuracy = model["accuracy"]
        assert 0 <= accuracy["mean_iou"] <= 1 and 0 <= accuracy["pixel_agreement"] <= 1
        assert set(accuracy["class_iou"]) == {"soil", "bedrock", "sand", "big_rock"}
        (speed,) = model["speed"]
        assert speed["threads"] == 1 and speed["load_ms"] > 0 and speed["first_ms"] > 0
        for key in ("tile_ms", "infer_ms", "frame_ms"):
            assert set(speed[key]) == STATS
        assert speed["tile_ms"]["n"] == 3 and speed["frame_ms"]["n"] == 1
        assert speed["tile_ms"]["min"] <= speed["tile_ms"]["p50"] <= speed["tile_ms"]["p90"] <= speed["tile_ms"]["p99"]
        assert speed["infer_ms"]["p50"] <= speed["tile_ms"]["p50"] * 1.5
        # 128x256 frame in 64x128 tiles overlapping by 16: rows at 0, 48, 64; columns at 0, 112, 128
        assert speed["frame_tiles"] == 9
        assert speed["fps"] > 0 and speed["gmacs"] > 0
        assert (speed["peak_fraction"] > 0) if model["format"] == "float32" else speed["peak_fraction"] is None
        assert model["rss"]["peak_mb"] > model["rss"]["baseline_mb"] > 0
    reference = data["models"][0]
    assert reference["accuracy"]["pixel_agreement"] == 1.0 and reference["accuracy"]["iou_drop"] == 0.0
    assert data["models"][1]["accuracy"]["iou_drop"] == pytest.approx(
        reference["accuracy"]["mean_iou"] - data["models"][1]["accuracy"]["mean_iou"], abs=1e-4
    )


def test_write_doc_replaces_only_the_generated_section(bench_run):
    result, _, doc = bench_run
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.\n")
    assert text.count(report.DOC_BEGIN) == 1 and "| float32 |" in text
    data = json.loads(result.stdout)
    report.update_doc(doc, report.doc_section(data, placeholder="tiny models"))
    again = doc.read_text()
    assert again.count(report.DOC_BEGIN) == 1 and again.count(report.DOC_END) == 1
    assert "Placeholder:** tiny models" in again and again.startswith("# Benchmarks\n\nHand-written intro.\n")


def test_check_results_names_each_model_that_falls_short(bench_run):
    data = json.loads(bench_run[0].stdout)
    assert bench.check_results(data, min_miou=0.0, max_iou_drop=1.0) == []
    failures = bench.check_results(data, min_miou=1.01)
    assert [f.split(":")[0] for f in failures] == ["float32", "int8-ptq"]
    data["models"][1]["accuracy"]["iou_drop"] = 0.05  # as if int8 lost 5 points of IoU
    failures = bench.check_results(data, max_iou_drop=0.02)
    assert len(failures) == 1 and failures[0].startswith("int8-ptq:") and "--max-iou-drop 0.02" in failures[0]


def test_check_mode_exit_codes(tiles_npz, tiny_float32, tiny_int8, tmp_path):
    failed = invoke(tiny_float32, tiny_int8, "--data", tiles_npz, "--out", tmp_path, "--min-miou", "0.99", *QUICK)
    assert failed.exit_code == 1
    assert "check failed: float32: mIoU" in failed.stderr and "check failed: int8-ptq: mIoU" in failed.stderr
    assert (tmp_path / "benchmarks.json").exists()  # the report is written even when a check fails

    no_reference = invoke(tiny_int8, "--data", tiles_npz, "--out", tmp_path, "--max-iou-drop", "0.1", *QUICK)
    assert no_reference.exit_code == 2
    assert no_reference.stderr.strip().splitlines()[-1].startswith("error: --max-iou-drop needs a float reference")


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["missing.tflite"], "missing.tflite: no such file or directory", 1),
        (["{npz}"], "not a marsedge model", 1),
        (["{model}"], "no labelled tiles to score", 1),
        (["{model}", "--data", "{npz}", "--threads", "1,x"], "threads must be a comma-separated list", 2),
        (["{model}", "--data", "{npz}", "--frame-size", "1024"], "frame size must be HEIGHTxWIDTH", 2),
        (["{model}", "--data", "{npz}", "--split", "val"], "--split val picks a split of the models' training data", 2),
    ],
)
def test_bad_input_is_one_error_line(args, message, code, tiles_npz, tiny_int8, tmp_path, monkeypatch):
    """Bad data or models exit 1, options that cannot apply exit 2; one line either way."""
    monkeypatch.setattr("marsedge.cli.default_data_path", lambda *models: None)  # as on a machine without shared data
    result = invoke(*[a.format(npz=tiles_npz, model=tiny_int8) for a in args], "--out", tmp_path)
    assert result.exit_code == code
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_profile_ops_times_every_op_and_finds_the_partition_split(tiny_int8):
    from marsedge.benchmarks.ops import model_macs, op_type_totals, profile_ops

    profile = profile_ops(tiny_int8, threads=1, runs=2, warmup=0)
    assert [row.index for row in profile.ops] == list(range(9))
    assert sum(row.macs for row in profile.ops) == model_macs(tiny_int8) == TINY_MACS
    assert all(row.ms > 0 and row.min_ms <= row.ms for row in profile.ops)
    assert sum(row.share for row in profile.ops) == pytest.approx(1.0, abs=1e-3)
    # XNNPACK has no int8 nearest-neighbour resize: it splits the graph in two partitions.
    assert profile.not_delegated == ["RESIZE_NEAREST_NEIGHBOR (int8)"] and profile.partitions == 2
    assert op_type_totals(profile)["CONV_2D"]["count"] == 4
    assert "RESIZE_NEAREST_NEIGHBOR" in report.ops_markdown([profile])


def test_profile_ops_folds_a_float16_weight_dequantize_into_its_consumer(tmp_path):
    """A float16 export starts with DEQUANTIZE ops on constant weights: XNNPACK cannot run
    one alone, and at run time it is folded into the weights; it is timed with its CONV_2D."""
    pytest.importorskip("tensorflow")
    from marsedge.benchmarks.ops import profile_ops
    from marsedge.train.tf_env import keras, tf

    inputs = keras.Input((16, 16, 1), batch_size=1)
    outputs = keras.layers.Conv2D(8, 3, padding="same")(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    model = tmp_path / "fp16.tflite"
    model.write_bytes(converter.convert())

    profile = profile_ops(model, threads=1, runs=2, warmup=0)
    assert [row.op for row in profile.ops] == ["CONV_2D", "CONV_2D"]
    assert all(row.xnnpack and row.ms > 0 for row in profile.ops)


@pytest.mark.slow
def test_run_directory_with_keras_reference(tmp_path_factory, tiny_float32, tiny_int8, tmp_path):
    from tests._runs import make_tiny_run

    run = make_tiny_run(tmp_path_factory.mktemp("runs"))
    export = tmp_path / "run"
    shutil.copytree(run, export)
    (export / "export").mkdir(exist_ok=True)
    for model in (tiny_float32, tiny_int8):
        shutil.copy(model, export / "export" / model.name)
    result = invoke(export, "--split", "val", "--out", tmp_path / "out", "--json", "--min-miou", "0", *QUICK)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [m["label"] for m in data["models"]] == ["keras", "float32", "int8-ptq"]
    assert data["reference"] == "keras" and data["models"][0]["speed"] is None
    assert data["models"][0]["accuracy"]["pixel_agreement"] == 1.0
    assert data["settings"]["split"] == "val" and "val split of" in data["settings"]["tiles_from"]


def test_tta_adds_a_row_per_tflite_model(tiles_npz, tiny_int8, tmp_path):
    result = invoke(tiny_int8, "--data", tiles_npz, "--out", tmp_path, "--tta", "--json", *QUICK)
    assert result.exit_code == 0, result.stderr
    report_ = json.loads(result.stdout)
    assert [(m["label"], m["tta"]) for m in report_["models"]] == [("int8-ptq", False), ("int8-ptq +TTA", True)]
    plain, tta = report_["models"]
    assert tta["accuracy"]["mean_iou"] is not None and tta["speed"][0]["tile_ms"]["n"] == 1
    assert (
        tta["size_kb"] == plain["size_kb"]
        and "--tta" in report_["settings"]["sources"]
        or "--tta" in report_["command"]
    )


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")  # TFLiteConverter's, harmless
def test_upsample_speed_tool_forms_compute_the_same_logits():
    pytest.importorskip("tensorflow")
    tool = load_tool("upsample_speed")
    from marsedge.export.fold import depth_to_space_weights

    transpose, d2s = tool.build("TRANSPOSE_CONV"), tool.build("CONV_2D 1x1 + DEPTH_TO_SPACE")
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(2, 2, 4, 24)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    transpose.layers[1].set_weights([kernel, bias])
    [conv] = [layer for layer in d2s.layers if layer.__class__.__name__ == "Conv2D"]
    conv.set_weights(list(depth_to_space_weights(kernel, bias)))
    tiles = rng.normal(size=(1, *tool.SHAPE)).astype(np.float32)
    expected = transpose(tiles).numpy()
    assert expected.shape == (1, 64, 128, 4)
    np.testing.assert_allclose(d2s(tiles).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert len(tool.int8_model(d2s)) > 0


def test_arch_speed_tool_times_float_and_int8_of_each_shape(tmp_path):
    pytest.importorskip("tensorflow")
    tool = load_tool("arch_speed")
    out = tmp_path / "arch.md"
    shapes = [
        {"base_filters": 4, "depth": 1, "dilation_rates": [1], "bottleneck_filters": None, "stem_stride": s}
        for s in (1, 2)
    ]
    assert (
        tool.main(
            ["--configs", json.dumps(shapes), "--threads", "1", "--runs", "10", "--warmup", "1", "--out", str(out)]
        )
        == 0
    )
    rows = [line for line in out.read_text().splitlines() if line.startswith("| base_filters 4")]
    assert len(rows) == 2 and all(line.count("|") == 8 for line in rows)  # 7 columns at 1 thread count
    assert "stem_stride 2" in rows[1] and rows[1].split("|")[-2].strip().endswith("x")


def test_whole_frames_report_ms_and_memory_per_size(bench_run):
    result, _, _ = bench_run
    rows = json.loads(result.stdout)["frames"]
    assert [(row["precision"], row["size"]) for row in rows] == [
        (precision, size) for precision in ("float32", "int8-ptq") for size in (256, 1024, 2048)
    ]
    for row in rows:
        assert row["ms_p50"] > 0 and row["tiles"] >= 1 and row["peak_rss_mb"] > 0


def test_terminal_table_keeps_the_columns_that_pick_a_format(tiles_npz, tiny_float32, tiny_int8, tmp_path):
    result = invoke(tiny_float32, tiny_int8, "--data", tiles_npz, "--out", tmp_path, *QUICK)
    assert result.exit_code == 0, result.stderr
    header = [c.strip() for c in result.stdout.splitlines()[0].strip("|").split("|")]
    assert header == list(report.SHORT_COLUMNS)
    assert "every column: " + str(tmp_path / "benchmarks.md") in result.stdout
    wide = (tmp_path / "benchmarks.md").read_text().splitlines()[0]
    assert "IoU soil" in wide and "ms/tile p99" in wide  # the wide table goes to the file
    # models whose training tiles are unknown are scored with a warning, not silently
    assert "WARNING: cannot tell which of these tiles the model trained on" in result.stderr


@pytest.mark.parametrize("drop, cell", [(-0.035, "+3.50"), (0.012, "-1.20"), (0.0, "0.00"), (None, report.DASH)])
def test_accuracy_change_reads_with_its_sign(drop, cell):
    assert report.change_cell(drop) == cell


def test_corruption_section_scores_whole_frames(tiles_npz, tiny_float32, tiny_int8, tmp_path):
    from marsedge.train.synthetic import write_ai4mars

    frames = write_ai4mars(tmp_path / "frames", count=2, size=128, seed=2).parents[1]
    result = invoke(
        tiny_float32, tiny_int8, "--data", tiles_npz, "--split", "all", "--out", tmp_path / "out",
        "--corruption-frames", "2", "--frames-data", frames, *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "| noise 4 (middle) |" in result.stdout  # the terminal shows the section
    section = json.loads((tmp_path / "out" / "benchmarks.json").read_text())["corruptions"]
    assert section["frames"] == 2 and section["split"] == "all" and len(section["tables"]) == 2
    assert "--corruption-frames 2" in json.loads((tmp_path / "out" / "benchmarks.json").read_text())["command"]
    assert (
        "Corruption benchmark: 2 whole labelled frames (all split)" in (tmp_path / "out" / "benchmarks.md").read_text()
    )


def test_same_named_files_from_two_folders_are_two_rows(tiles_npz, tiny_int8, tmp_path):
    """A bundled model and a run's export share file names; each keeps its own row."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(tiny_int8, tmp_path / folder / "model.tflite")
    first, second = tmp_path / "a" / "model.tflite", tmp_path / "b" / "model.tflite"
    result = invoke(first, second, "--data", tiles_npz, "--out", tmp_path / "out", "--json", *QUICK)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["models"]
    assert sorted(Path(m["path"]).resolve() for m in rows) == sorted([first.resolve(), second.resolve()])
    assert sorted(m["label"] for m in rows) == ["int8-ptq (a/model)", "int8-ptq (b/model)"]

"""End-to-end training runs on tiny generated data: artefacts, resume, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("marsedge.train.tf_env")

from marsedge.cli import app
from marsedge.train.config import ModelConfig, TrainConfig
from marsedge.train.synthetic import write_dataset
from marsedge.train.trainer import train

TINY_MODEL = ModelConfig(
    base_filters=4, depth=2, dilation_rates=(1, 2), bottleneck_filters=None, dropout=0.0, stem_stride=1
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny.npz", count=64, seed=0)


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    values = dict(data=str(data), out=str(out), epochs=1, batch_size=16, model=TINY_MODEL, preview_tiles=4)
    values.update(changes)
    return TrainConfig(**values)


def test_one_epoch_writes_every_artefact(tiny_data, tmp_path):
    out = tmp_path / "run"
    metrics = train(_config(tiny_data, out), progress=False)
    for name in (
        "config.json",
        "split.npz",
        "history.csv",
        "best.weights.h5",
        "metrics.json",
        "preview.png",
        "state.json",
    ):
        assert (out / name).exists(), name
    saved = json.loads((out / "config.json").read_text())
    assert TrainConfig.from_dict(saved["train"]) == _config(tiny_data, out)
    assert len(saved["data_sha256"]) == 64
    assert saved["derived"]["output_classes"] == [1, 2, 3, 4]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert set(on_disk["val"]["class_iou"]) == {"soil", "bedrock", "sand", "big_rock"}
    assert np.array(on_disk["val"]["confusion_matrix"]).shape == (5, 5)
    assert on_disk["parameters"] > 0 and on_disk["macs_per_tile"] > 0 and "device" in on_disk
    assert "test" in on_disk
    with open(out / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1"] and float(rows[0]["images_per_s"]) > 0
    split = np.load(out / "split.npz")
    assert not set(split["train"]) & set(split["val"])
    from PIL import Image

    for name in ("curves.png", "confusion.png"):  # plots people look at
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] >= 300, name
    assert not list(out.glob(".*.png")), "no temporary plot files left"


def test_resume_continues_from_saved_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_data, out, epochs=1), progress=False)
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 0
    train(_config(tiny_data, out, epochs=2), resume=True, progress=False)
    with open(out / "history.csv") as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1", "2"]
    assert json.loads((out / "state.json").read_text())["epoch"] == 1
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["epochs"] == 2
    assert saved["epoch_changes"] == [{"after_epoch": 1, "from": 1, "to": 2}]
    assert len(list((out / "checkpoints").glob("epoch_*"))) == 2


def test_wall_time_survives_a_process_killed_after_its_checkpoint(tiny_data, tmp_path):
    """The training time in metrics.json covers every process of a resumed run. It used to
    add only a finished run's metrics.json, so a run killed mid-way (no metrics.json yet)
    and resumed reported the last process's time alone (a teacher run: 67 of 91 min)."""
    out = tmp_path / "run"
    train(_config(tiny_data, out, epochs=1), progress=False)
    first = json.loads((out / "state.json").read_text())["wall_seconds"]
    assert 0 < first <= json.loads((out / "metrics.json").read_text())["wall_seconds"]
    (out / "metrics.json").unlink()  # as if killed after the epoch-1 checkpoint
    metrics = train(_config(tiny_data, out, epochs=2), resume=True, progress=False)
    with open(out / "history.csv") as handle:
        second_epoch = float(list(csv.DictReader(handle))[1]["epoch_seconds"])
    assert metrics["wall_seconds"] >= first + second_epoch
    assert json.loads((out / "state.json").read_text())["wall_seconds"] >= first + second_epoch


def test_cli_bare_resume_keeps_the_runs_epoch_budget(tiny_data, tmp_path):
    """`marsedge train --out RUN --resume` used to apply the default budget (40) to a run
    started with another one, stretching its schedule; only --epochs may change it."""
    out = tmp_path / "run"
    train(_config(tiny_data, out, epochs=1), progress=False)
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["epochs"] == 1 and "epoch_changes" not in saved
    with open(out / "history.csv") as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1"]


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(tiny_data, tmp_path):
    from marsedge.errors import RunDirError

    out = tmp_path / "run"
    train(_config(tiny_data, out), progress=False)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(_config(tiny_data, out), progress=False)
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(_config(tiny_data, tmp_path / "empty"), resume=True, progress=False)


def test_resume_detects_changed_data(tiny_data, tmp_path):
    from marsedge.errors import RunDirError

    data = tmp_path / "data.npz"
    data.write_bytes(tiny_data.read_bytes())
    out = tmp_path / "run"
    train(_config(data, out), progress=False)
    write_dataset(data, count=64, seed=99)
    with pytest.raises(RunDirError, match="data changed"):
        train(_config(data, out, epochs=2), resume=True, progress=False)


def test_cli_train_and_clear_errors(tiny_data, tmp_path):
    runner = CliRunner()
    config = tmp_path / "tiny.json"
    config.write_text(
        json.dumps(
            {
                "model": {"base_filters": 4, "depth": 2, "dilation_rates": [1], "bottleneck_filters": None},
                "batch_size": 16,
            }
        )
    )
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "val mIoU" in result.output and (out / "metrics.json").exists()

    missing = tmp_path / "nope.npz"
    result = runner.invoke(app, ["train", "--data", str(missing), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1
    assert f"error: {missing}: no such file" in result.output
    assert "Traceback" not in result.output

    config.write_text(json.dumps({"los": "focal"}))
    result = runner.invoke(
        app, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "r3"), "--config", str(config)]
    )
    assert result.exit_code == 1 and "unknown config keys: los" in result.output


def test_train_without_tensorflow_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from marsedge.cli import main\n"
        f"sys.argv = ['marsedge', 'train', '--data', {str(tmp_path / 'x.npz')!r}, '--out', {str(tmp_path / 'r')!r}]\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "pip install -e '.[train]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_limited_run_split_indexes_the_whole_file(tiny_data, tmp_path):
    """--limit picks a subset, but split.npz must point into the whole file so that export,
    eval and bench (which reload the file) score the very tiles training scored."""
    from marsedge.core.metrics import confusion_matrix, mean_iou
    from marsedge.train import rundir
    from marsedge.train.trainer import predict_classes

    out = tmp_path / "run"
    metrics = train(_config(tiny_data, out, limit=32), progress=False)
    run = rundir.read_run(out)
    val = rundir.split_tiles(run, "val")
    model = rundir.load_model(run)
    score = mean_iou(confusion_matrix(val.masks, predict_classes(model, val.images, run.output_classes)))
    assert score == pytest.approx(metrics["val"]["mean_iou"], abs=1e-9)


def test_run_made_before_stem_stride_existed_keeps_its_full_resolution_stem(tmp_path):
    from marsedge.train import rundir

    train_values = TrainConfig(data="d.npz", out=str(tmp_path)).to_dict()
    del train_values["model"]["stem_stride"]  # config.json of a run trained before the option
    (tmp_path / rundir.CONFIG_FILE).write_text(json.dumps({"train": train_values, "derived": {}}))
    np.savez(tmp_path / rundir.SPLIT_FILE, train=np.arange(2), val=np.arange(2, 3), test=np.arange(0))
    assert rundir.read_run(tmp_path, need_weights=False).config.model.stem_stride == 1
    assert TrainConfig.from_dict({"model": {"base_filters": 8}}).model.stem_stride == 2  # a user's partial config


def test_init_from_starts_at_the_source_runs_best_weights(tiny_data, tmp_path, caplog):
    from marsedge.train.rundir import load_model, read_run

    source = tmp_path / "source"
    train(_config(tiny_data, source, epochs=2), progress=False)
    # A learning rate of ~0 leaves the convolution kernels where they started.
    still = dict(learning_rate=1e-12, weight_decay=0.0)
    with caplog.at_level("WARNING"):
        train(_config(tiny_data, tmp_path / "tuned", init_from=str(source), **still), progress=False)
    assert "optimizer" not in caplog.text  # the source's optimizer state is not loaded (nor warned about)
    train(_config(tiny_data, tmp_path / "fresh", **still), progress=False)
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["train"]["init_from"] == str(source)

    def kernels(run):
        model = load_model(read_run(run))
        return {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}

    before, tuned, fresh = kernels(source), kernels(tmp_path / "tuned"), kernels(tmp_path / "fresh")
    assert before and before.keys() == tuned.keys() == fresh.keys()
    for name in before:
        np.testing.assert_allclose(tuned[name], before[name], atol=1e-6, err_msg=name)
    assert not all(np.allclose(fresh[name], before[name]) for name in before)


def test_init_from_refuses_a_run_with_another_split_or_shape(tiny_data, tmp_path):
    from marsedge.errors import RunDirError

    source = tmp_path / "source"
    train(_config(tiny_data, source), progress=False)
    with pytest.raises(RunDirError, match="its train split differs|its val split differs"):
        train(_config(tiny_data, tmp_path / "a", init_from=str(source), seed=7), progress=False)
    wider = dataclasses.replace(TINY_MODEL, base_filters=8)
    with pytest.raises(RunDirError, match="model shape differs"):
        train(_config(tiny_data, tmp_path / "b", init_from=str(source), model=wider), progress=False)
    with pytest.raises(RunDirError, match="run directory not found"):
        train(_config(tiny_data, tmp_path / "c", init_from=str(tmp_path / "nope")), progress=False)
    other = write_dataset(tmp_path / "other.npz", count=64, seed=5)
    with pytest.raises(RunDirError, match="trained on other data"):
        train(_config(other, tmp_path / "d", init_from=str(source)), progress=False)


def test_student_trains_from_a_teacher_of_another_shape_and_refuses_other_splits(tiny_data, tmp_path):
    from marsedge.errors import RunDirError

    teacher = tmp_path / "teacher"
    train(_config(tiny_data, teacher, epochs=2, model=dataclasses.replace(TINY_MODEL, base_filters=8)), progress=False)
    student = tmp_path / "student"
    metrics = train(
        _config(tiny_data, student, teachers=(str(teacher),), distill_weight=0.5, distill_class_weighted=True),
        progress=False,
    )
    saved = json.loads((student / "config.json").read_text())["train"]
    assert saved["teachers"] == [str(teacher)] and saved["distill_weight"] == 0.5 and saved["distill_class_weighted"]
    assert TrainConfig.from_dict(saved).teachers == (str(teacher),)
    assert 0.0 <= metrics["val"]["mean_iou"] <= 1.0 and (student / "best.weights.h5").exists()
    # marsedge compare --ensemble: each run and their average, paired on the val split
    from marsedge.evaluation.compare import compare_models

    report = compare_models([teacher, student], split="val", resamples=20, ensemble=True)
    rows = {Path(row["model"]).name: row for row in report["models"]}
    assert list(rows) == ["teacher", "student", "average of teacher + student"]
    assert rows["student"]["miou"] == pytest.approx(metrics["val"]["mean_iou"], abs=1e-6)
    assert rows["teacher"]["delta"] == 0.0
    with pytest.raises(RunDirError, match="split differs"):
        train(_config(tiny_data, tmp_path / "other", teachers=(str(teacher),), seed=7), progress=False)
    with pytest.raises(RunDirError, match="run directory not found"):
        train(_config(tiny_data, tmp_path / "none", teachers=(str(tmp_path / "nope"),)), progress=False)


def test_student_distils_from_an_exported_file_that_records_its_split(tiny_data, tmp_path):
    """``--teacher FILE.tflite``: a fresh checkout can distil from the bundled model (no run directory)."""
    from marsedge.edge_runtime.metadata import embed_metadata, read_metadata
    from marsedge.errors import RunDirError
    from marsedge.export.pipeline import ExportOptions, export_run
    from marsedge.train import rundir
    from marsedge.train.data import file_sha256
    from marsedge.train.distill import teacher_targets

    teacher = tmp_path / "teacher"
    train(_config(tiny_data, teacher, epochs=2), progress=False)
    export_run(teacher, ExportOptions(formats=("float32", "ptq"), out=str(tmp_path / "export"), gate=False))
    run = rundir.read_run(teacher)
    split, data_hash = rundir.split_indices(run), file_sha256(tiny_data)
    file = tmp_path / "export" / "marsedge_float32.tflite"
    metadata = read_metadata(file.read_bytes())
    assert metadata["source_split"] == rundir.split_fingerprint(split, data_hash)

    # the file teaches what its run teaches: the same flip-averaged probabilities (an int8 file: close)
    images = rundir.split_tiles(run, "train").images
    targets = {
        name: teacher_targets((str(path),), split, data_hash, [1, 2, 3, 4], images, 1.0).astype(np.float32)
        for name, path in (("run", teacher), ("float32", file), ("int8", tmp_path / "export" / "marsedge_ptq.tflite"))
    }
    np.testing.assert_allclose(targets["float32"], targets["run"], atol=2e-3)
    assert np.abs(targets["int8"] - targets["run"]).mean() < 0.02

    student = tmp_path / "student"
    metrics = train(_config(tiny_data, student, teachers=(str(file),)), progress=False)
    assert json.loads((student / "config.json").read_text())["train"]["teachers"] == [str(file)]
    assert 0.0 <= metrics["val"]["mean_iou"] <= 1.0 and (student / "best.weights.h5").exists()

    with pytest.raises(RunDirError, match="its (train|val) split differs"):
        train(_config(tiny_data, tmp_path / "other", teachers=(str(file),), seed=7), progress=False)
    old = tmp_path / "old.tflite"  # exported before files recorded their split
    old.write_bytes(embed_metadata(file.read_bytes(), {k: v for k, v in metadata.items() if k != "source_split"}))
    with pytest.raises(RunDirError, match="old.tflite: its metadata records no source_split"):
        train(_config(tiny_data, tmp_path / "a", teachers=(str(old),)), progress=False)
    with pytest.raises(RunDirError, match="nope.tflite: teacher file not found"):
        train(_config(tiny_data, tmp_path / "b", teachers=(str(tmp_path / "nope.tflite"),)), progress=False)
    assert not (tmp_path / "b").exists()
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(RunDirError, match="junk.tflite: "):
        train(_config(tiny_data, tmp_path / "c", teachers=(str(junk),)), progress=False)
    assert not (tmp_path / "a" / "best.weights.h5").exists()


def test_pending_files_and_their_half_written_temporaries_are_cleared(tmp_path):
    """A kill inside the atomic write of a pending preview left ``..preview.NNNN.pending.png.xxxx.png``
    (found by the random-kill reliability test); starting or resuming the run removes it."""
    from marsedge.train import rundir
    from marsedge.train.trainer import _promote_pending_best

    (tmp_path / rundir.STATE_FILE).write_text('{"epoch": 1, "best_epoch": 1}')
    leftovers = ["..preview.0002.pending.png.f5j__x0j.png", "..best.0002.pending.weights.h5.a1b2c3d4.tmp"]
    for name in [".preview.0001.pending.png", ".preview.0002.pending.png", *leftovers]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "history.csv").write_text("epoch\n")
    _promote_pending_best(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", rundir.PREVIEW_FILE, rundir.STATE_FILE]


def test_weight_average_follows_the_tensorflow_formula_and_swaps_back():
    from marsedge.train.ema import WeightAverage
    from marsedge.train.tf_env import keras, tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    start = model.get_weights()
    average = WeightAverage(tf, keras, model, decay=0.5)
    expected = [w.copy() for w in start]
    for n in range(1, 6):  # n-th update: d = min(0.5, (1 + n) / (10 + n)) = 0.5 from n = 8 only
        new = [w + n for w in start]
        model.set_weights(new)
        average.update()
        d = min(0.5, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, new)]
    raw = model.get_weights()
    with average.applied():
        for got, want in zip(model.get_weights(), expected):  # BatchNormalization statistics included
            np.testing.assert_allclose(got, want, rtol=1e-6)
    for got, want in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(got, want)
    assert int(average.module.updates.numpy()) == 5


def test_averaged_weights_are_validated_saved_and_resumed(tiny_data, tmp_path):
    from marsedge.train.tf_env import tf

    out = tmp_path / "run"
    config = _config(tiny_data, out, ema_decay=0.99)
    train(config, progress=False)
    with open(out / "history.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert 0.0 <= float(row["val_miou_raw"]) <= 1.0
    assert json.loads((out / "metrics.json").read_text())["val"]["mean_iou"] == pytest.approx(
        float(row["val_miou"]), abs=1e-6
    )

    def checkpoint():
        state = json.loads((out / "state.json").read_text())
        return tf.train.load_checkpoint(str(out / state["checkpoint"]))

    reader = checkpoint()
    names = reader.get_variable_to_shape_map()
    shadow = {n for n in names if n.startswith("ema/shadow/")}
    steps = len(np.load(out / "split.npz")["train"]) // 16  # one update per batch
    assert shadow and reader.get_tensor("ema/updates/.ATTRIBUTES/VARIABLE_VALUE") == steps

    from marsedge.train.rundir import load_model, read_run

    best = load_model(read_run(out)).get_weights()
    averaged = [reader.get_tensor(f"ema/shadow/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(len(best))]
    for got, want in zip(best, averaged):  # best.weights.h5 holds the averaged weights, not the raw ones
        np.testing.assert_allclose(got, want, rtol=1e-6)
    train(config.replace(epochs=2), resume=True, progress=False)
    assert checkpoint().get_tensor("ema/updates/.ATTRIBUTES/VARIABLE_VALUE") == 2 * steps  # went on
    with pytest.raises(Exception, match="ema_decay must be in"):
        config.replace(ema_decay=1.0)


def test_split_seed_keeps_the_split_while_seed_changes_the_run(tiny_data, tmp_path):
    first = tmp_path / "seed0"
    train(_config(tiny_data, first), progress=False)
    other = tmp_path / "seed7"  # same split: it may distil from the first run
    train(_config(tiny_data, other, seed=7, split_seed=0, teachers=(str(first),)), progress=False)
    a, b = np.load(first / "split.npz"), np.load(other / "split.npz")
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a[name], b[name])
    moved = tmp_path / "seed7_own_split"
    train(_config(tiny_data, moved, seed=7), progress=False)
    assert not np.array_equal(np.load(moved / "split.npz")["val"], a["val"])


def test_ema_select_either_keeps_the_better_weights_of_each_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_data, out, epochs=2, ema_decay=0.99, ema_select="either"), progress=False)
    with open(out / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        raw, averaged = float(row["val_miou_raw"]), float(row["val_miou_average"])
        assert float(row["val_miou"]) == max(raw, averaged)
        assert row["val_weights"] == ("raw" if raw > averaged else "average")
    best = max(rows, key=lambda row: float(row["val_miou"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val"]["mean_iou"] == pytest.approx(
        float(best["val_miou"]), abs=1e-6
    )  # the saved weights are those scored


def test_ema_select_either_needs_weight_averaging():
    from marsedge.errors import MarsEdgeError
    from marsedge.train.config import TrainConfig

    with pytest.raises(MarsEdgeError, match="ema_decay"):
        TrainConfig(ema_select="either")
    with pytest.raises(MarsEdgeError, match="ema_select"):
        TrainConfig(ema_decay=0.99, ema_select="raw")


def test_interpolated_weights_lie_between_a_fine_tune_and_its_start(tiny_data, tmp_path):
    """tools/interpolate_weights.py (WiSE-FT): (1 - alpha) * start + alpha * fine-tune, as a run directory."""
    from conftest import load_tool

    from marsedge.export.pipeline import ExportOptions, export_run
    from marsedge.train import rundir
    from marsedge.train.tflite_weights import load_tflite_weights

    tool = load_tool("interpolate_weights")
    source = tmp_path / "source"
    train(_config(tiny_data, source, epochs=2), progress=False)
    export_run(source, ExportOptions(formats=("float32",), out=str(tmp_path / "export"), gate=False))
    start = tmp_path / "export" / "marsedge_float32.tflite"
    tuned = tmp_path / "tuned"
    train(_config(tiny_data, tuned, init_from=str(start), learning_rate=1e-2, ema_decay=0.9), progress=False)

    weights = {}
    for alpha in (0.0, 0.25, 1.0):
        out = tool.interpolate(tuned, tmp_path / f"mix{alpha}", alpha)
        weights[alpha] = rundir.load_model(rundir.read_run(out)).get_weights()
        assert json.loads((out / "interpolation.json").read_text())["alpha"] == alpha
    base = rundir.load_model(rundir.read_run(tuned))
    fine = base.get_weights()
    load_tflite_weights(base, start)
    for s, f, w0, w1, mix in zip(base.get_weights(), fine, weights[0.0], weights[1.0], weights[0.25]):
        np.testing.assert_allclose(w0, s, atol=1e-6)
        np.testing.assert_allclose(w1, f, atol=1e-6)
        np.testing.assert_allclose(mix, 0.75 * s + 0.25 * f, atol=1e-5)
    assert any(not np.allclose(s, f) for s, f in zip(base.get_weights(), fine))

    # --last: the last checkpoint's weight average (one epoch here, so the best weights)
    last = tool.interpolate(tuned, tmp_path / "last", 1.0, last=True)
    assert json.loads((last / "interpolation.json").read_text())["epoch"] == 1
    for w, f in zip(rundir.load_model(rundir.read_run(last)).get_weights(), fine):
        np.testing.assert_allclose(w, f, atol=1e-6)

    # per-layer shares: the encoder's layers from the fine-tune, the rest from the start
    layered = tool.interpolate(tuned, tmp_path / "layered", 0.0, layer_alphas={"enc": 1.0})
    assert json.loads((layered / "interpolation.json").read_text())["layer_alphas"] == {"enc": 1.0}
    mixed_model, fine_model = rundir.load_model(rundir.read_run(layered)), rundir.load_model(rundir.read_run(tuned))
    for layer, fine_layer, start_layer in zip(mixed_model.layers, fine_model.layers, base.layers):
        expected = fine_layer if layer.name.startswith("enc") else start_layer
        for w, e in zip(layer.get_weights(), expected.get_weights()):
            np.testing.assert_allclose(w, e, atol=1e-6, err_msg=layer.name)

    # the source run keeps its own batch-norm statistics: mixing it with the file is refused
    with pytest.raises(SystemExit, match="batch normalisation"):
        tool.interpolate(source, tmp_path / "bad", 0.5, start)
    with pytest.raises(SystemExit, match="alpha"):
        tool.interpolate(tuned, tmp_path / "bad", 1.5)


def test_missing_teacher_or_init_file_is_refused_before_data_loads_and_leaves_no_run_folder(tiny_data, tmp_path):
    runner = CliRunner()
    for option, value, message in (
        ("teachers", ("runs/teachers/absent",), "runs/teachers/absent: teacher run directory not found"),
        ("init_from", str(tmp_path / "absent_float32.tflite"), "absent_float32.tflite: init_from file not found"),
    ):
        config = tmp_path / f"{option}.json"
        config.write_text(json.dumps({option: value}))
        out = tmp_path / f"run_{option}"
        result = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(out), "--config", str(config)])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert "tiles, dropped" not in result.output  # refused before the data was read
        assert not out.exists()


def test_a_setup_that_fails_after_loading_removes_the_run_folder_it_made(tiny_data, tmp_path):
    first = tmp_path / "first"
    train(_config(tiny_data, first), progress=False)
    out = tmp_path / "refused"
    other_split = _config(tiny_data, out, init_from=str(first), seed=5)  # another split: refused after loading
    with pytest.raises(Exception, match="split"):
        train(other_split, progress=False)
    assert not out.exists()


def _kernels(path: Path, run: Path) -> dict[str, np.ndarray]:
    from marsedge.train.rundir import load_model, read_run

    model = load_model(read_run(run), weights=path)
    return {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}


def test_mix_alpha_mixes_the_last_epoch_with_the_start(tiny_data, tmp_path):
    source = tmp_path / "source"
    train(_config(tiny_data, source), progress=False)
    tuned = tmp_path / "tuned"
    metrics = train(_config(tiny_data, tuned, init_from=str(source), mix_alpha=0.25), progress=False)
    mix = json.loads((tuned / "mix.json").read_text())
    assert mix["alpha"] == 0.25 and mix["partner"] == str(source) and metrics["mix"] == mix
    start = _kernels(source / "best.weights.h5", source)
    alone = _kernels(tuned / "fine_tuned.weights.h5", tuned)  # one epoch: its best is its last
    mixed = _kernels(tuned / "best.weights.h5", tuned)
    assert not all(np.allclose(alone[name], start[name]) for name in start)
    for name in start:
        np.testing.assert_allclose(mixed[name], 0.25 * alone[name] + 0.75 * start[name], atol=1e-6, err_msg=name)
    before = (tuned / "best.weights.h5").read_bytes()
    train(_config(tiny_data, tuned, init_from=str(source), mix_alpha=0.25), resume=True, progress=False)
    assert (tuned / "best.weights.h5").read_bytes() == before  # a resume after the mix mixes nothing again


def test_mix_with_trains_a_partner_from_the_same_start_and_mixes_its_best(tiny_data, tmp_path):
    source = tmp_path / "source"
    train(_config(tiny_data, source), progress=False)
    out = tmp_path / "soup"
    config = _config(tiny_data, out, init_from=str(source), mix_alpha=0.5, mix_with={"augment": "none", "seed": 3})
    train(config, progress=False)
    partner = out / "mixed_with"
    saved = json.loads((partner / "config.json").read_text())["train"]
    assert saved["augment"] == "none" and saved["seed"] == 3 and saved["init_from"] == str(source)
    assert saved["mix_alpha"] is None and (partner / "metrics.json").exists()
    alone, other = _kernels(out / "fine_tuned.weights.h5", out), _kernels(partner / "best.weights.h5", partner)
    mixed = _kernels(out / "best.weights.h5", out)
    for name in alone:
        np.testing.assert_allclose(mixed[name], 0.5 * (alone[name] + other[name]), atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mix_with": {"augment": "none"}}, "needs mix_alpha"),
        ({"mix_alpha": 1.5, "init_from": "x.tflite"}, r"mix_alpha must be in \(0, 1\]"),
        ({"mix_alpha": 0.5}, "needs init_from"),
        ({"mix_alpha": 0.5, "init_from": "x.tflite", "mix_with": {"data": "other.npz"}}, "not allowed: data"),
        ({"mix_alpha": 0.5, "init_from": "x.tflite", "mix_with": {"augment": "sideways"}}, "augment must be one of"),
    ],
)
def test_mix_settings_are_checked(changes, message):
    from marsedge.errors import MarsEdgeError

    with pytest.raises(MarsEdgeError, match=message):
        TrainConfig(data="d.npz", **changes)


def test_two_refine_head_fine_tunes_of_one_file_mix_like_mix_alpha(tiny_data, tmp_path):
    """A refine head the start file does not hold learns its own batch normalisation in each
    fine-tune; tools/interpolate_weights.py mixes it with the rest, as ``mix_alpha`` does."""
    from conftest import load_tool

    from marsedge.export.pipeline import ExportOptions, export_run
    from marsedge.train import rundir

    tool = load_tool("interpolate_weights")
    train(_config(tiny_data, tmp_path / "source"), progress=False)
    export_run(tmp_path / "source", ExportOptions(formats=("float32",), out=str(tmp_path / "export"), gate=False))
    start = str(tmp_path / "export" / "marsedge_float32.tflite")
    refine = dataclasses.replace(TINY_MODEL, stem_stride=2, stem_pool=True, refine_filters=4, refine_residual=True)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run, rate in zip(runs, (1e-2, 3e-3)):
        train(_config(tiny_data, run, init_from=start, model=refine, learning_rate=rate), progress=False)
    mixed = tool.interpolate(runs[0], tmp_path / "mix", 0.7, str(runs[1]))
    a, b, mix = (rundir.load_model(rundir.read_run(r)) for r in (*runs, mixed))
    head_bn = [layer for layer in a.layers if layer.name.startswith("refine") and "bn" in layer.name]
    assert head_bn and not np.allclose(head_bn[0].get_weights()[-1], b.get_layer(head_bn[0].name).get_weights()[-1])
    for wa, wb, wm in zip(a.get_weights(), b.get_weights(), mix.get_weights()):
        np.testing.assert_allclose(wm, 0.7 * wa + 0.3 * wb, atol=1e-5)

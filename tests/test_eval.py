"""`marsedge eval`: IoU on a hand-made mask pair matches the hand count; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from marsedge.cli import app

CENTRES = (32.0, 96.0, 160.0, 224.0)  # grey level each output class (1..4) is nearest to


def _metadata(height: int, width: int) -> dict:
    return {
        "format": "marsedge-tflite/1",
        "name": "nearest-grey-stub",
        "precision": "float32",
        "input": {"height": height, "width": width, "channels": 1, "pixel_range": [0, 255]},
        "classes": [
            {"id": i, "name": n, "color": "#808080"}
            for i, n in enumerate(("background", "soil", "bedrock", "sand", "big_rock"))
        ],
        "output_classes": [1, 2, 3, 4],
    }


@pytest.fixture(scope="module")
def stub_model(tmp_path_factory) -> Path:
    """A float32 .tflite whose class is the nearest of CENTRES to each pixel's grey level.

    One 1x1 convolution: logit_k = c_k * g - c_k**2 / 2, largest for the nearest centre.
    """
    from marsedge.edge_runtime.metadata import embed_metadata
    from marsedge.train.tf_env import keras, tf

    inputs = keras.Input((64, 128, 1), batch_size=1)
    conv = keras.layers.Conv2D(4, 1)
    model = keras.Model(inputs, conv(inputs))
    centres = np.asarray(CENTRES, np.float32)
    conv.set_weights([centres.reshape(1, 1, 1, 4), -(centres**2) / 2])
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    path = tmp_path_factory.mktemp("stub") / "stub.tflite"
    path.write_bytes(embed_metadata(content, _metadata(64, 128)))
    return path


@pytest.fixture
def mask_pair(tmp_path) -> Path:
    """One tile: left half grey 10 (-> soil), right half grey 250 (-> big rock).

    Truth: rows 0-31 soil, rows 32-47 big rock, rows 48-63 unlabeled (ignored). By hand:
    soil TP 32*64=2048, FN 2048 (right half), FP 16*64=1024 -> IoU 2048/5120 = 0.4;
    big rock TP 1024, FN 1024, FP 2048 -> 1024/4096 = 0.25; bedrock and sand absent;
    mean IoU (0.4 + 0.25) / 2 = 0.325.
    """
    folder = tmp_path / "pairs"
    folder.mkdir()
    image = np.full((64, 128), 10, np.uint8)
    image[:, 64:] = 250
    mask = np.zeros((64, 128), np.uint8)
    mask[:32] = 1
    mask[32:48] = 4
    Image.fromarray(image).save(folder / "tile.png")
    Image.fromarray(mask).save(folder / "tile_mask.png")
    return folder


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="marsedge")


def test_eval_matches_the_hand_computed_iou(stub_model, mask_pair):
    result = invoke("eval", stub_model, "--data", mask_pair, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mean_iou"] == pytest.approx(0.325)
    assert report["class_iou"] == {
        "soil": pytest.approx(0.4),
        "bedrock": None,
        "sand": None,
        "big_rock": pytest.approx(0.25),
    }
    cm = np.asarray(report["confusion_matrix"])
    assert (cm[1, 1], cm[1, 4], cm[4, 1], cm[4, 4]) == (2048, 2048, 1024, 1024)
    assert cm.sum() == 2048 * 3  # unlabeled truth pixels are not counted
    assert report["tiles"] == 1 and report["kind"] == "tflite"


def test_eval_prints_iou_and_confusion_matrix(stub_model, mask_pair):
    result = invoke("eval", stub_model, "--data", mask_pair)
    assert result.exit_code == 0, result.output
    assert "mean IoU 0.3250" in result.stdout
    assert "soil       0.4000" in result.stdout and "bedrock    -" in result.stdout
    assert "confusion matrix" in result.stdout and "big_rock" in result.stdout.splitlines()[-1]


def test_eval_rejects_tiles_of_another_size(stub_model, tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.ones((32, 32), np.uint8)).save(tmp_path / "a_mask.png")
    result = invoke("eval", stub_model, "--data", tmp_path)
    assert result.exit_code == 1  # data the model cannot take: a data error
    assert (
        result.stderr.strip()
        == "error: tiles are 32x32 but the model takes 64x128; evaluate on tiles of the model's input size"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "val"], "--split val needs the model's run directory"),
        (["--split", "everything"], "'everything' is not one of 'all', 'train', 'val', 'test'"),
    ],
)
def test_eval_split_errors(stub_model, mask_pair, args, message):
    result = invoke("eval", stub_model, "--data", mask_pair, *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")


def test_eval_missing_model_and_data(tmp_path, mask_pair):
    result = invoke("eval", tmp_path / "nope.tflite", "--data", mask_pair)
    assert result.exit_code == 1 and "no such model file or run directory" in result.stderr
    (tmp_path / "junk.tflite").write_bytes(b"not a model")
    result = invoke("eval", tmp_path / "junk.tflite", "--data", mask_pair)
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


def test_eval_anatomy_reads_where_the_errors_are(stub_model, mask_pair):
    """Big rock (rows 32-47): the right half found (1024 px), the left half called soil;
    the soil rows' right half (2048 px) called big rock: recall 1/2, precision 1/3."""
    result = invoke("eval", stub_model, "--data", mask_pair, "--anatomy", "--json")
    assert result.exit_code == 0, result.output
    anatomy = json.loads(result.stdout)["anatomy"]
    rock = anatomy["big_rock"]
    assert rock["recall"] == pytest.approx(0.5) and rock["precision"] == pytest.approx(1 / 3)
    assert rock["missed_as"] == {"soil": 1024, "bedrock": 0, "sand": 0}
    assert rock["false_from"] == {"soil": 2048, "bedrock": 0, "sand": 0}
    assert [row["radius"] for row in anatomy["boundary"]] == [1, 2, 3]
    assert "halves" not in anatomy  # one tile: no top/bottom pairs to compare
    text = invoke("eval", stub_model, "--data", mask_pair, "--anatomy")
    assert text.exit_code == 0, text.output
    assert "| boundary band (px) |" in text.stdout and "big rock: recall 0.500, precision 0.333" in text.stdout


def test_eval_plot_draws_the_confusion_matrix(stub_model, mask_pair, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "plots" / "confusion.png"
    result = invoke("eval", stub_model, "--data", mask_pair, "--plot", target)
    assert result.exit_code == 0, result.output
    with Image.open(target) as image:
        assert image.format == "PNG" and image.size[0] > 200
    assert sorted(p.name for p in target.parent.iterdir()) == ["confusion.png"]  # no temporary left


def test_eval_plot_to_an_unwritable_place_is_one_line(stub_model, mask_pair, tmp_path):
    pytest.importorskip("matplotlib")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("eval", stub_model, "--data", mask_pair, "--plot", blocker / "confusion.png")
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_compare_same_model_twice_and_their_ensemble(stub_model, mask_pair):
    result = invoke(
        "compare",
        stub_model,
        stub_model,
        "--data",
        mask_pair,
        "--split",
        "all",
        "--resamples",
        "50",
        "--ensemble",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tiles"] == 1 and report["frames"] == 1 and report["resamples"] == 50
    models = report["models"]
    assert [m["kind"] for m in models] == ["tflite", "tflite", "ensemble"]
    for row in models:
        assert row["miou"] == pytest.approx(0.325) and row["delta"] == 0.0 and row["ahead"] == 0.0
        assert row["low"] == row["high"] == 0.0
    text = invoke("compare", stub_model, stub_model, "--data", mask_pair, "--split", "all", "--resamples", "10")
    assert text.exit_code == 0, text.output
    assert "95% interval of Δ" in text.stdout and "stub.tflite | 0.3250 | +0.0000 |" in text.stdout
    # a per-pixel model is its own mirror image: flip averaging changes nothing
    flipped = invoke(
        "compare", stub_model, "--data", mask_pair, "--split", "all", "--resamples", "10", "--tta", "--json"
    )
    assert flipped.exit_code == 0, flipped.output
    report = json.loads(flipped.stdout)
    assert report["tta"] is True and report["models"][0]["miou"] == pytest.approx(0.325)


def test_compare_needs_a_split_it_can_find(stub_model, mask_pair, tmp_path):
    result = invoke("compare", stub_model, "--data", mask_pair)  # --split val, but no run directory
    assert result.exit_code == 2 and "needs the model's run directory" in result.stderr  # a usage error
    result = invoke("compare", tmp_path / "nope.tflite", "--data", mask_pair, "--split", "all")
    assert result.exit_code == 1 and "no such model file or run directory" in result.stderr


def test_compare_without_data_says_so(stub_model, monkeypatch):
    monkeypatch.setattr("marsedge.datapaths.tiles_file", lambda: None)  # as on a machine without the shared data
    result = invoke("compare", stub_model, "--split", "all")
    assert result.exit_code == 2 and "give --data" in result.stderr


def test_compare_scores_two_fields_of_view_on_the_finer_labels(monkeypatch):
    """A 128-px and a 256-px model of the same frames: the coarse mask is resized (nearest)
    to the fine labels, as the runtime resizes a mask back to the frame."""
    from types import SimpleNamespace

    from marsedge.evaluation import compare as module

    fine = np.array([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]], np.uint8)
    wrong = fine.copy()
    wrong[0, 0, 0] = 2  # one pixel of soil called bedrock

    class Tiles(SimpleNamespace):
        def __len__(self):
            return len(self.masks)

    targets = {
        "coarse": SimpleNamespace(
            tiles=Tiles(masks=fine[:, ::2, ::2]), predict_masks=lambda: fine[:, ::2, ::2], kind="tflite"
        ),
        "fine": SimpleNamespace(tiles=Tiles(masks=fine), predict_masks=lambda: wrong, kind="tflite"),
    }
    for target in targets.values():
        target.indices, target.groups = np.arange(1), np.arange(1)
    monkeypatch.setattr(module, "load_target", lambda source, *args: targets[source])
    report = module.compare_models(["coarse", "fine"], data="frames", split="val", resamples=5)
    coarse, fine_row = report["models"]
    assert coarse["miou"] == 1.0
    assert fine_row["class_iou"]["soil"] == pytest.approx(3 / 4) and fine_row["class_iou"]["bedrock"] == pytest.approx(
        4 / 5
    )
    with pytest.raises(module.UsageError, match="one field of view"):
        module.compare_models(["coarse", "fine"], data="frames", split="val", resamples=5, ensemble=True)


def test_new_commands_have_help():
    for command in ("compare", "runs"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--json" in result.stdout
    assert "--anatomy" in invoke("eval", "--help").stdout and "--plot" in invoke("eval", "--help").stdout


def test_eval_reports_calibration_and_draws_the_reliability_diagram(stub_model, mask_pair, tmp_path):
    """Every pixel of the stub is sure of its class (confidence ~1) and half the labelled
    pixels are right: ECE 0.5, all of them at confidence >= 0.9 with accuracy 0.5."""
    pytest.importorskip("matplotlib")
    result = invoke("eval", stub_model, "--data", mask_pair, "--json", "--reliability", tmp_path / "rel.png")
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.stdout)["calibration"]
    assert calibration["temperature"] == 1.0  # a file without calibration
    report = calibration["calibrated"]
    assert report["pixels"] == 2048 * 3 and report["ece"] == pytest.approx(0.5, abs=1e-3)
    assert report["trusted_share"] == 1.0 and report["trusted_accuracy"] == 0.5
    assert report["reliability"][-1]["pixels"] == 2048 * 3
    assert Image.open(tmp_path / "rel.png").size[0] > 100
    text = invoke("eval", stub_model, "--data", mask_pair).stdout
    assert "calibration (labelled pixels, 15 bins): temperature 1" in text and "ECE 0.5000" in text

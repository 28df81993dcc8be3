"""Calibrated confidence: the temperature fit, the calibration figures, the runtime's
confidence map and --min-confidence, the metadata key, and `marsedge eval`'s report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN, save_png
from PIL import Image
from typer.testing import CliRunner

from marsedge.core.calibration import Reliability, calibrate_tiles, confidence, fit_temperature
from marsedge.edge_runtime import ModelError, Segmenter, embed_metadata, read_metadata
from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.metadata import temperature
from marsedge.edge_runtime.tile_model import TileModel


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="marsedge-run")


def with_temperature(source, target, value):
    """A copy of model ``source`` whose metadata says ``calibration.temperature = value``."""
    content = source.read_bytes()
    target.write_bytes(embed_metadata(content, {**read_metadata(content), "calibration": {"temperature": value}}))
    return target


def test_the_fit_finds_the_temperature_that_drew_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (60_000, 4)).astype(np.float32)
    probabilities = np.exp(logits / 2.5)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = (rng.random((len(logits), 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 4)), np.zeros(0, int))


def test_reliability_counts_bins_and_the_trusted_pixels():
    reliability = Reliability()
    # 100 pixels at 0.95, 90 right; 100 at 0.5, 50 right: both bins calibrated to 0.05 and 0
    reliability.add(np.full(100, 0.95), np.arange(100) < 90)
    reliability.add(np.full(100, 0.5), np.arange(100) < 50)
    report = reliability.report()
    assert report["ece"] == pytest.approx(0.025) and report["accuracy"] == pytest.approx(0.7)
    assert report["trusted_share"] == 0.5 and report["trusted_accuracy"] == 0.9
    assert sum(b["pixels"] for b in report["reliability"]) == 200 and len(report["reliability"]) == 15


def test_calibrate_tiles_predicts_masks_and_stamps_a_temperature(tiny_int8):
    model = TileModel.from_file(tiny_int8)
    frame = np.array(Image.open(GOLDEN / "frame0.png"))
    tiles = np.stack([frame[:64, :128], frame[64:128, :128], frame[96:160, 96:224]])
    truth = model.predict_masks(tiles)
    truth[:, :8] = 0  # unlabeled rows are left out
    masks, calibration = calibrate_tiles(model.float_logits, model.output_classes, tiles, truth)
    assert np.array_equal(masks, model.predict_masks(tiles))
    assert calibration["pixels"] == np.count_nonzero(truth)
    # every labelled pixel is right: a colder softmax (T < 1) is more likely
    assert calibration["temperature"] < 1 and calibration["nll_after"] <= calibration["nll_before"]
    assert calibration["ece_after"] <= calibration["ece_before"]


def test_old_files_have_temperature_one_and_a_bad_one_is_refused(tiny_int8, tmp_path):
    assert temperature(read_metadata(tiny_int8)) == 1.0
    assert temperature(read_metadata(with_temperature(tiny_int8, tmp_path / "t.tflite", 1.7))) == 1.7
    for bad in (0, -1, "2", None, float("nan")):
        with pytest.raises(ModelError, match="calibration.temperature"):
            read_metadata(with_temperature(tiny_int8, tmp_path / "bad.tflite", bad))


def test_the_confidence_map_is_the_calibrated_softmax_of_the_tile(tiny_int8, tmp_path):
    hot = with_temperature(tiny_int8, tmp_path / "hot.tflite", 2.0)
    tile = np.array(Image.open(GOLDEN / "tile0.png"))  # one tile at scale 1: no blending
    plain, warm = Segmenter(tiny_int8, scale=1), Segmenter(hot, scale=1)
    logits = TileModel.from_file(tiny_int8).float_logits(tile)
    first, second = plain.segment(tile), warm.segment(tile)
    assert first.confidence.shape == tile.shape and first.confidence.dtype == np.float32
    np.testing.assert_allclose(first.confidence, confidence(logits), rtol=1e-5)
    np.testing.assert_allclose(second.confidence, confidence(logits, 2.0), rtol=1e-5)
    assert np.array_equal(first.mask, second.mask)  # the temperature never changes a class
    assert second.mean_confidence < first.mean_confidence
    assert warm.model_info["temperature"] == 2.0


def test_confidence_of_a_large_frame_is_blended_like_the_logits(segmenter, golden_frame):
    result = segmenter.segment(golden_frame)
    assert result.confidence.shape == golden_frame.shape
    assert result.confidence.min() >= 0.25 - 1e-6 and result.confidence.max() <= 1.0  # 4 classes
    assert result.mean_confidence == pytest.approx(float(result.confidence.mean()), rel=1e-5)
    assert result.below_threshold == pytest.approx(float((result.confidence < 0.9).mean()))


@pytest.mark.parametrize("min_confidence", [None, 0.8])
@pytest.mark.parametrize("size", [(1024, 1024), (1000, 771)])
def test_a_resized_frame_counts_every_frame_pixel(golden_frame, size, min_confidence):
    """Shares, mean confidence and the share below the threshold are counted at model
    resolution, weighted by the frame pixels each model pixel becomes: they equal the
    counts over the frame-size mask and confidence map."""
    frame = np.array(Image.fromarray(golden_frame).resize(size[::-1]))
    result = Segmenter("navcam", min_confidence=min_confidence).segment(frame)
    assert result.scale < 1 and result.mask.shape == result.confidence.shape == frame.shape
    certainty = result.confidence
    assert result.mean_confidence == pytest.approx(float(certainty.mean(dtype=np.float64)), rel=1e-9)
    assert result.below_threshold == pytest.approx(float((certainty < result.confidence_threshold).mean()), rel=1e-9)
    kept = result.mask[certainty >= min_confidence] if min_confidence else result.mask
    for info in result.classes:
        assert result.class_fractions[info.name] == pytest.approx((kept == info.id).mean(), rel=1e-9, abs=1e-12)


def test_cli_writes_the_confidence_png_and_min_confidence_paints_unknown(tiny_int8, tmp_path):
    frame = save_png(tmp_path / "f.png", np.array(Image.open(GOLDEN / "frame0.png")))
    out = tmp_path / "out"
    result = run(frame, "--out", out, "--model", tiny_int8, "--confidence", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    stored = np.array(Image.open(out / "f_confidence.png"))
    assert stored.dtype == np.uint8 and stored.shape == (160, 224) and record["outputs"]["confidence"]
    assert record["confidence"]["mean"] == pytest.approx(stored.mean() / 255, abs=0.01)
    assert record["confidence"]["threshold"] == 0.9
    mask = np.array(Image.open(out / "f_mask.png"))
    threshold = float(np.median(stored)) / 255 + 0.01
    result = run(frame, "--out", tmp_path / "sure", "--model", tiny_int8, "--min-confidence", threshold, "--json")
    assert result.exit_code == 0, result.stderr
    sure = json.loads(result.stdout)
    sure_mask = np.array(Image.open(tmp_path / "sure" / "f_mask.png"))
    unsure = stored < round(threshold * 255)
    assert (sure_mask[unsure] == 0).mean() > 0.97 and np.array_equal(sure_mask[sure_mask != 0], mask[sure_mask != 0])
    assert sure["confidence"]["below_threshold"] == pytest.approx((sure_mask == 0).mean(), abs=0.01)
    kept = sure_mask[sure_mask != 0]
    shares = {name: value for name, value in sure["class_fractions"].items()}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)  # shares of the pixels kept
    assert shares["soil"] == pytest.approx((kept == 1).mean(), abs=1e-5)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_a_threshold_outside_0_1_is_a_usage_error(tiny_int8, tmp_path, value):
    frame = save_png(tmp_path / "f.png", np.zeros((32, 32), np.uint8))
    result = run(frame, "--out", tmp_path / "out", "--model", tiny_int8, "--min-confidence", value)
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "--min-confidence" in result.stderr and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="min_confidence"):
        Segmenter(tiny_int8, min_confidence=1.5)


def test_a_rerun_with_another_model_leaves_no_output_of_the_first(tiny_int8, tiny_float32, tmp_path):
    frame = save_png(tmp_path / "f.png", np.array(Image.open(GOLDEN / "frame0.png")))
    out = tmp_path / "out"
    assert run(frame, "--out", out, "--model", tiny_int8, "--confidence").exit_code == 0
    assert run(frame, "--out", out, "--model", tiny_int8, "--no-overlay").exit_code == 0  # same model: kept
    assert (out / "f_confidence.png").is_file() and (out / "f_overlay.png").is_file()
    assert run(frame, "--out", out, "--model", tiny_float32, "--no-overlay").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["f.json", "f_mask.png"]

"""Degraded frames: a model's metadata may name a partner (``degraded_route``) that segments
each frame measuring blurred or noisy; the bundled default routes to navcam-robust."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
from conftest import SAMPLES, save_png
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from marsedge.edge_runtime import ModelError, Segmenter
from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.metadata import embed_metadata, read_metadata
from marsedge.edge_runtime.quality import DegradedRoute, FrameQuality, frame_quality
from marsedge.edge_runtime.segmenter import BUNDLED_MODELS


def blurred(image: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(image + rng.normal(0, sigma, image.shape)), 0, 255).astype(np.uint8)


def test_noise_measures_added_sensor_noise_in_grey_levels(golden_frame):
    clean = frame_quality(golden_frame)
    assert frame_quality(noisy(golden_frame, 4)).noise > clean.noise + 1.5
    assert frame_quality(noisy(golden_frame, 8)).noise == pytest.approx(8, rel=0.2)
    assert frame_quality(np.full((64, 64), 90, np.uint8)) == FrameQuality(0.0, 1.0)  # flat: no noise, no blur


def test_noise_is_measured_on_the_frame_given_and_reduced_by_the_resize(golden_frame):
    """Area-averaging 4 x 4 pixels divides white noise by 4: the network sees a quarter."""
    frame = noisy(golden_frame, 8)
    assert frame_quality(frame, 0.25).noise == pytest.approx(frame_quality(frame).noise / 4)
    assert frame_quality(frame, 2.0).noise == frame_quality(frame).noise  # an enlargement keeps it
    big = noisy(np.kron(golden_frame, np.ones((4, 4), np.uint8)), 8)  # the same noise on a 4x larger frame
    assert frame_quality(big, 0.25).noise == pytest.approx(2, rel=0.25)


def test_sharpness_falls_with_blur_and_rises_with_noise(golden_frame):
    clean = frame_quality(golden_frame).sharpness
    assert frame_quality(blurred(golden_frame, 1)).sharpness < clean / 2
    assert frame_quality(blurred(golden_frame, 2)).sharpness < frame_quality(blurred(golden_frame, 1)).sharpness
    assert frame_quality(noisy(golden_frame, 8)).sharpness > clean


def test_frames_too_small_to_measure_measure_clean(golden_frame):
    assert frame_quality(np.zeros((9, 200), np.uint8)) == FrameQuality(0.0, 1.0)
    assert frame_quality(golden_frame[:10, :10]).noise >= 0


@pytest.fixture
def routed(tmp_path, tiny_int8, tiny_float32):
    """tiny_int8 routing degraded frames to a partner (tiny_float32 whose calibration
    temperature is 3, so its confidence maps tell which network ran)."""
    partner_metadata = {**read_metadata(tiny_float32), "calibration": {"temperature": 3.0}}
    partner = tmp_path / "partner.tflite"
    partner.write_bytes(embed_metadata(tiny_float32.read_bytes(), partner_metadata))
    route = {
        "model": partner.name,
        "sha256": hashlib.sha256(partner.read_bytes()).hexdigest(),
        "max_noise": 5.0,
        "min_sharpness": 0.7,
    }
    model = tmp_path / "routed.tflite"
    model.write_bytes(embed_metadata(tiny_int8.read_bytes(), {**read_metadata(tiny_int8), "degraded_route": route}))
    return model, partner


def test_a_degraded_frame_runs_the_partner_and_a_clean_one_the_model(routed, tiny_int8, golden_frame):
    model, partner = routed
    segmenter = Segmenter(model)
    sharp, soft = golden_frame, blurred(golden_frame, 2)
    assert not segmenter.route.degraded(frame_quality(sharp)) and segmenter.route.degraded(frame_quality(soft))

    result = segmenter.segment(sharp)
    alone = Segmenter(tiny_int8).segment(sharp)
    assert not result.degraded and result.quality == frame_quality(sharp).as_dict()
    np.testing.assert_array_equal(result.mask, alone.mask)
    np.testing.assert_array_equal(result.confidence, alone.confidence)

    result = segmenter.segment(soft)
    by_partner = Segmenter(partner).segment(soft)
    assert result.degraded and result.quality["sharpness"] < 0.7
    np.testing.assert_array_equal(result.mask, by_partner.mask)
    np.testing.assert_array_equal(result.confidence, by_partner.confidence)
    assert not np.array_equal(result.confidence, Segmenter(tiny_int8).segment(soft).confidence)

    off = Segmenter(model, route_degraded=False)
    assert off.route is None and off.segment(soft).quality is None
    np.testing.assert_array_equal(off.segment(soft).confidence, Segmenter(tiny_int8).segment(soft).confidence)
    # the route decides masks: a batch under one setting does not count frames of the other as done;
    # without a route the settings are those of a model that never had one
    assert segmenter.mask_settings()["degraded_route"]["sha256"] == hashlib.sha256(partner.read_bytes()).hexdigest()
    assert "degraded_route" not in off.mask_settings()
    assert off.mask_settings().keys() == Segmenter(tiny_int8).mask_settings().keys()
    assert segmenter.model_info["degraded_route"]["path"] == str(partner)


def test_a_missing_partner_warns_and_every_frame_runs_the_model(routed, caplog, golden_frame):
    model, partner = routed
    partner.unlink()
    with caplog.at_level(logging.WARNING):
        segmenter = Segmenter(model)
    assert segmenter.route is None and "partner.tflite, which is not beside it" in caplog.text
    assert not segmenter.segment(blurred(golden_frame, 2)).degraded


def test_a_changed_partner_is_refused(routed):
    model, partner = routed
    partner.write_bytes(partner.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="partner.tflite: not the file routed.tflite routes degraded frames to"):
        Segmenter(model)


def test_a_partner_with_other_classes_is_refused(routed):
    model, partner = routed
    metadata = read_metadata(partner)
    metadata["classes"] = [{**c, "name": f"other {c['name']}"} for c in metadata["classes"]]
    partner.write_bytes(embed_metadata(partner.read_bytes(), metadata))
    route = {**read_metadata(model)["degraded_route"], "sha256": hashlib.sha256(partner.read_bytes()).hexdigest()}
    model.write_bytes(embed_metadata(model.read_bytes(), {**read_metadata(model), "degraded_route": route}))
    with pytest.raises(ModelError, match="input size, classes or field of view differ"):
        Segmenter(model)


@pytest.mark.parametrize(
    "route",
    [{"model": "x.tflite"}, {"model": "../x.tflite", "sha256": "0", "max_noise": 1, "min_sharpness": 1}, "x"],
)
def test_a_malformed_route_is_a_model_error(route):
    with pytest.raises(ModelError, match="degraded_route"):
        DegradedRoute.from_metadata({"degraded_route": route})


def test_the_bundled_default_routes_to_navcam_robust():
    segmenter = Segmenter("navcam")
    assert segmenter.route is not None and segmenter.route.model == BUNDLED_MODELS["navcam-robust"].name
    assert Segmenter("navcam-robust").route is None


def test_the_cli_records_each_frames_quality_and_no_route_turns_it_off(routed, tmp_path, golden_frame):
    model, _ = routed
    frame = save_png(tmp_path / "soft.png", blurred(golden_frame, 2))
    for extra, degraded in (((), True), (("--no-route",), False)):
        out = tmp_path / f"out{len(extra)}"
        result = CliRunner().invoke(app, ["--model", str(model), "--out", str(out), *extra, str(frame)])
        assert result.exit_code == 0, result.output
        record = json.loads((out / "soft.json").read_text())
        assert record["degraded"] is degraded
        assert (record["quality"] is None) is (not degraded)


def test_a_cluster_worker_without_the_files_gets_the_partner_beside_its_copy(routed, tmp_path, monkeypatch):
    import tempfile

    from marsedge.cluster.batch import _local_model

    model, partner = routed
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(worker))
    content = model.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    shipped = [partner.name, hashlib.sha256(partner.read_bytes()).hexdigest(), str(partner), partner.read_bytes()]
    copy = _local_model(tmp_path / "elsewhere" / model.name, digest, content, shipped)
    assert copy.parent.parent == worker and (copy.parent / partner.name).read_bytes() == partner.read_bytes()
    assert Segmenter(copy).route is not None
    assert _local_model(model, digest, content, shipped) == model  # the job's own files, partner and all
    partner.write_bytes(b"another file")  # a stale partner beside the job's model: the copy, not a failure
    assert _local_model(model, digest, content, shipped) == copy


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/data/samples not present")
def test_the_default_routes_blurred_and_noisy_navcam_frames_and_no_clean_sample():
    """Noise of sigma 4 on a 256-px frame reaches the 128-px network as sigma 2: routed too."""
    default, robust = Segmenter("navcam"), Segmenter("navcam-robust")
    for path in sorted(SAMPLES.glob("*.png")):
        frame = np.asarray(Image.open(path).convert("L"))
        assert not default.segment(frame).degraded, path.name
        for degraded in (blurred(frame, 2), noisy(frame, 4), noisy(frame, 8)):
            result = default.segment(degraded)
            assert result.degraded, (path.name, result.quality)
            np.testing.assert_array_equal(result.mask, robust.segment(degraded).mask)


def test_a_frame_smaller_than_the_field_of_view_is_measured_as_given(tiny_int8, golden_frame):
    """Enlarging repeats pixels, which reads as blur: a small frame is measured before it."""
    import math

    model = Segmenter(tiny_int8, scale=2.0)
    assert model.scale_for(*golden_frame.shape) == 2.0
    enlarged = np.kron(golden_frame, np.ones((2, 2), np.uint8))
    assert frame_quality(enlarged).sharpness < 0.675 < frame_quality(golden_frame).sharpness
    assert math.isclose(frame_quality(golden_frame).sharpness, 1.1417, rel_tol=0.01)


def test_black_or_white_blocks_do_not_hide_noise(golden_frame):
    noisy_frame = noisy(golden_frame, 8)
    bordered = noisy_frame.copy()
    bordered[:, :40] = 0  # a black border, or lines lost in downlink
    bordered[:24] = 255  # saturated sky
    assert frame_quality(bordered).noise == pytest.approx(frame_quality(noisy_frame).noise, rel=0.15)

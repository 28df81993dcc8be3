"""The Python API: one Segmenter reused across frames, typed results, clear model errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from marsedge.edge_runtime import (
    DEFAULT_MODEL,
    ImageError,
    ModelError,
    Segmenter,
    SegmenterOptions,
    embed_metadata,
    read_metadata,
)
from marsedge.edge_runtime.segmenter import DEFAULT_TILE_OVERLAP


def frames(n: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (100 + 17 * i, 150 + 29 * i), dtype=np.uint8) for i in range(n)]


def test_reuse_across_frames_gives_identical_results(tiny_int8, golden_frame):
    segmenter = Segmenter(tiny_int8)
    first = segmenter.segment(golden_frame)
    for other in frames(3):
        segmenter.segment(other)
    again = segmenter.segment(golden_frame)
    np.testing.assert_array_equal(first.mask, again.mask)
    assert first.class_fractions == again.class_fractions
    np.testing.assert_array_equal(Segmenter(tiny_int8).segment(golden_frame).mask, first.mask)


def test_result_fields(segmenter, golden_frame):
    result = segmenter.segment(golden_frame)
    assert result.mask.shape == golden_frame.shape and result.mask.dtype == np.uint8
    assert list(result.class_fractions) == ["unlabeled", "soil", "bedrock", "sand", "big_rock"]
    counts = np.bincount(result.mask.ravel(), minlength=5)
    np.testing.assert_allclose(list(result.class_fractions.values()), counts / result.mask.size)
    assert set(result.timings) == {"preprocess", "infer", "postprocess"}
    assert all(ms >= 0 for ms in result.timings.values())
    assert [c.id for c in result.classes] == [0, 1, 2, 3, 4]
    with pytest.raises(FrozenInstanceError):
        result.tiles = 0


def test_rgb_and_16_bit_frames_match_their_grey(segmenter, golden_frame):
    grey = segmenter.segment(golden_frame).mask
    rgb = np.repeat(golden_frame[..., None], 3, axis=2)
    np.testing.assert_array_equal(segmenter.segment(rgb).mask, grey)
    np.testing.assert_array_equal(segmenter.segment(golden_frame.astype(np.uint16) * 257).mask, grey)
    np.testing.assert_array_equal(segmenter.segment(golden_frame[..., None]).mask, grey)


def test_threads_and_concurrent_callers_give_identical_masks(tiny_int8):
    batch = frames(4)
    expected = [Segmenter(tiny_int8, threads=1).segment(f).mask for f in batch]
    shared = Segmenter(tiny_int8, threads=2)
    with ThreadPoolExecutor(4) as pool:
        masks = list(pool.map(lambda f: shared.segment(f).mask, batch * 2))
    for got, want in zip(masks, expected * 2):
        np.testing.assert_array_equal(got, want)


def test_options_round_trip(tiny_int8):
    segmenter = Segmenter(tiny_int8, threads=1, tile_overlap=8, tta=True)
    assert segmenter.options == SegmenterOptions(tiny_int8, 1, False, 8, True)
    assert Segmenter.from_options(segmenter.options).options == segmenter.options
    assert SegmenterOptions().tile_overlap == DEFAULT_TILE_OVERLAP
    with pytest.raises(FrozenInstanceError):
        segmenter.options.threads = 4


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"tile_overlap": 64}, "tile_overlap must be in 0..63"), ({"threads": 0}, "threads")]
)
def test_bad_options_list_the_allowed_values(tiny_int8, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Segmenter(tiny_int8, **kwargs)


def test_non_images_raise_image_error(segmenter):
    with pytest.raises(ImageError, match="float"):
        segmenter.segment(np.zeros((64, 128), np.float64))
    with pytest.raises(ImageError, match="shape"):
        segmenter.segment(np.zeros((2, 64, 128, 1), np.uint8))


def test_bundled_model_is_a_trained_marsedge_model():
    segmenter = Segmenter()
    assert segmenter.model_path == DEFAULT_MODEL
    assert read_metadata(DEFAULT_MODEL)["metrics"]
    assert segmenter.model_info["name"] and segmenter.model_info["version"]
    # A trained model gives structured masks, not one class everywhere.
    from marsedge.train.synthetic import generate_frame

    frame, _ = generate_frame(256, 256, seed=0)
    assert len(np.unique(segmenter.segment(frame).mask)) >= 2


def with_metadata(tiny_int8, tmp_path, **changes):
    data = tiny_int8.read_bytes()
    meta = read_metadata(data)
    meta.update(changes)
    path = tmp_path / "changed.tflite"
    path.write_bytes(embed_metadata(data, meta))
    return path


def test_wrong_input_shape_is_a_model_error(tiny_int8, tmp_path):
    meta = read_metadata(tiny_int8)
    path = with_metadata(tiny_int8, tmp_path, input=dict(meta["input"], height=32))
    with pytest.raises(ModelError, match=r"wrong input shape \(1, 64, 128, 1\), expected \(1, 32, 128, 1\)"):
        Segmenter(path)


def test_model_for_another_class_count_is_a_model_error(tiny_int8, tmp_path):
    with pytest.raises(ModelError, match="wrong output shape"):
        Segmenter(with_metadata(tiny_int8, tmp_path, output_classes=[1, 2, 3]))


def test_metadata_on_something_that_is_not_a_model(tiny_int8, tmp_path):
    path = tmp_path / "fake.tflite"
    path.write_bytes(embed_metadata(b"\0" * 1000, read_metadata(tiny_int8)))
    with pytest.raises(ModelError, match="not a TFLite model"):
        Segmenter(path)


@pytest.mark.parametrize("cut", [100, 4000])
def test_truncated_model_is_a_model_error(tiny_int8, tmp_path, cut):
    path = tmp_path / "cut.tflite"
    path.write_bytes(tiny_int8.read_bytes()[:cut])
    with pytest.raises(ModelError):
        Segmenter(path)


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read model"):
        Segmenter(tmp_path / "missing.tflite")

"""``input.scale`` in old (``marsedge-tflite/1``) model metadata: frames are resized by
that fixed factor before tiling, as before, and the mask comes back at the frame's size
(nearest neighbour). Current files state their field of view instead
(tests/test_field_of_view.py).

The training tiles were cut from 256x256 NavCam frames reduced 2x, so a model trained on
them sees a full-resolution frame right only at ``scale: 0.5`` (model pixels per source
pixel). Tested with the tiny model whose metadata is rewritten with ``embed_metadata``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import save_png
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from typer.testing import CliRunner

from marsedge.edge_runtime import Segmenter, embed_metadata, read_metadata
from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.resample import resize_area, resize_nearest, scaled_size
from marsedge.train.synthetic import generate_frame


def scaled_model(model: Path, folder: Path, scale: float | None) -> Path:
    data = model.read_bytes()
    metadata = read_metadata(data)
    if scale is None:
        metadata["input"].pop("scale", None)
    else:
        metadata["input"]["scale"] = scale
    path = folder / f"scale_{scale}.tflite"
    path.write_bytes(embed_metadata(data, metadata))
    return path


@pytest.fixture(scope="module")
def navcam_frame() -> np.ndarray:
    return generate_frame(256, 256, seed=11)[0]


def test_half_scale_segments_the_2x_reduced_frame_and_upsamples_the_mask(tiny_int8, tmp_path, navcam_frame):
    half = Segmenter(scaled_model(tiny_int8, tmp_path, 0.5))
    plain = Segmenter(tiny_int8)
    result = half.segment(navcam_frame)

    reduced = resize_area(navcam_frame, 128, 128)
    blocks = navcam_frame.reshape(128, 2, 128, 2).astype(np.int64).sum(axis=(1, 3))
    assert np.array_equal(reduced, (blocks + 2) // 4)  # 2x2 means, rounded half up
    small = plain.segment(reduced)
    assert result.mask.shape == navcam_frame.shape
    assert np.array_equal(result.mask, np.repeat(np.repeat(small.mask, 2, axis=0), 2, axis=1))
    assert result.tiles == small.tiles
    assert result.class_fractions == pytest.approx(small.class_fractions, abs=1e-9)


def test_scale_one_and_no_scale_are_the_same(tiny_int8, tmp_path, navcam_frame):
    explicit = Segmenter(scaled_model(tiny_int8, tmp_path, 1.0)).segment(navcam_frame)
    absent = Segmenter(scaled_model(tiny_int8, tmp_path, None)).segment(navcam_frame)
    assert np.array_equal(explicit.mask, absent.mask)
    assert np.array_equal(absent.mask, Segmenter(tiny_int8).segment(navcam_frame).mask)


@pytest.mark.parametrize(
    ("scale", "shape"), [(0.5, (131, 255)), (0.5, (1, 1)), (0.25, (1024, 1024)), (2.0, (20, 30)), (0.3, (97, 203))]
)
def test_any_size_and_scale_gives_a_mask_of_the_frame_size(tiny_int8, tmp_path, scale, shape):
    segmenter = Segmenter(scaled_model(tiny_int8, tmp_path, scale))
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    result = segmenter.segment(frame)
    assert result.mask.shape == shape
    assert set(np.unique(result.mask)) <= {1, 2, 3, 4}
    assert sum(result.class_fractions.values()) == pytest.approx(1.0)


def test_cli_reports_source_size_and_scale(tiny_int8, tmp_path, navcam_frame):
    model = scaled_model(tiny_int8, tmp_path, 0.5)
    image = save_png(tmp_path / "navcam.png", navcam_frame)
    result = CliRunner().invoke(app, [str(image), "--out", str(tmp_path / "out"), "--json", "--model", str(model)])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["size"] == {"width": 256, "height": 256}
    assert record["scale"] == 0.5 and record["model_pixels_per_frame"] is None
    assert record["model"]["legacy_input_scale"] == 0.5
    assert record["tiles"] == Segmenter(tiny_int8).segment(resize_area(navcam_frame, 128, 128)).tiles
    assert Image.open(tmp_path / "out" / "navcam_mask.png").size == (256, 256)


def test_upscaling_counts_against_max_pixels(tiny_int8, tmp_path):
    model = scaled_model(tiny_int8, tmp_path, 2.0)
    image = save_png(tmp_path / "frame.png", np.zeros((300, 300), np.uint8))
    result = CliRunner().invoke(
        app, [str(image), "--out", str(tmp_path / "out"), "--max-pixels", "200000", "--model", str(model)]
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # after the old-metadata notice
    assert errors[0] == (
        f"error: {image}: 300x300 image becomes 360000 pixels of model input (resized and padded to whole tiles), "
        "above the limit of 200000 (--max-pixels)"
    )


def test_scaled_size_rounds_half_up():
    assert scaled_size(255, 131, 0.5) == (128, 66)
    assert scaled_size(1, 1, 0.25) == (1, 1)
    assert scaled_size(1024, 1024, 0.5) == (512, 512)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))),
    height=st.integers(1, 50),
    width=st.integers(1, 50),
)
def test_resize_properties(image, height, width):
    area = resize_area(image, height, width)
    assert area.shape == (height, width) and area.dtype == np.uint8
    assert image.min() <= area.min() and area.max() <= image.max()  # a mean stays in range
    flat = np.full_like(image, image.flat[0])
    assert (resize_area(flat, height, width) == image.flat[0]).all()
    nearest = resize_nearest(image, height, width)
    assert nearest.shape == (height, width) and set(np.unique(nearest)) <= set(np.unique(image))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12))), factor=st.integers(1, 4))
def test_nearest_then_area_by_a_whole_factor_round_trips(image, factor):
    h, w = image.shape
    big = resize_nearest(image, h * factor, w * factor)
    assert np.array_equal(big, np.repeat(np.repeat(image, factor, axis=0), factor, axis=1))
    assert np.array_equal(resize_area(big, h, w), image)

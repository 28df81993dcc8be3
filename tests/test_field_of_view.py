"""The model contract states its field of view (``model_pixels_per_frame``): whole frames of
any size are resized to the ground resolution the model was trained at; crops and other
cameras say so with ``frame_width`` / ``scale``; old ``input.scale`` files still load."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, save_png
from PIL import Image
from typer.testing import CliRunner

from marsedge.core.metadata import (
    FORMAT,
    FieldOfView,
    _strip_archive,
    build_metadata,
    class_table,
    embed_metadata,
    read_metadata,
    restamp,
)
from marsedge.edge_runtime import ModelError, Segmenter, SegmenterOptions
from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.resample import _resize_axis, nearest_weights, resize_area, resize_nearest
from marsedge.train.synthetic import generate_frame, generate_tiles

BUNDLED = Path(__file__).resolve().parents[1] / "marsedge" / "edge_runtime" / "models" / "marsedge_tiles_int8.tflite"


def with_field_of_view(model: Path, folder: Path, pixels: float | None = 128) -> Path:
    """A copy of ``model`` in the current format, stating ``pixels`` model pixels per frame."""
    data = model.read_bytes()
    path = folder / f"fov_{pixels}_{model.name}"
    path.write_bytes(embed_metadata(data, restamp(read_metadata(data), pixels)))
    return path


@pytest.fixture(scope="module")
def navcam_256() -> np.ndarray:
    """A real 256x256 NavCam frame when the shared samples exist, else a synthetic one."""
    paths = sorted(SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []
    if paths:
        return np.asarray(Image.open(paths[0]).convert("L"))
    return generate_frame(256, 256, seed=11)[0]


@pytest.fixture(scope="module")
def bundled() -> Segmenter:
    return Segmenter(BUNDLED)


def test_bundled_model_states_its_field_of_view():
    metadata = read_metadata(BUNDLED)
    assert metadata["format"] == FORMAT
    assert metadata["input"]["model_pixels_per_frame"] == 128 and "scale" not in metadata["input"]
    assert (metadata["input"]["height"], metadata["input"]["width"]) == (64, 128)
    assert metadata["classes"][0]["name"] == "unlabeled"


def test_1024_frame_segments_like_its_256_copy(bundled, navcam_256):
    """The old fixed factor (0.5) saw a 1024 frame at 512 px: 0.08 mIoU instead of 0.77."""
    big = np.asarray(Image.fromarray(navcam_256).resize((1024, 1024), Image.BICUBIC))
    small = bundled.segment(navcam_256)
    large = bundled.segment(big)
    assert small.scale == 0.5 and large.scale == 0.125
    assert large.mask.shape == (1024, 1024)
    agreement = (resize_nearest(large.mask, 256, 256) == small.mask).mean()
    assert agreement >= 0.97, agreement


def test_1280x960_frame_works(bundled, navcam_256):
    frame = np.asarray(Image.fromarray(navcam_256).resize((1280, 960), Image.BICUBIC))
    result = bundled.segment(frame)
    assert result.mask.shape == (960, 1280)
    assert result.scale == pytest.approx(0.1)  # the longer side becomes 128 model pixels
    assert result.tiles == bundled.segment(resize_area(frame, 96, 128)).tiles
    assert set(np.unique(result.mask)) <= {1, 2, 3, 4}


def test_a_tile_with_frame_width_128_is_segmented_as_in_training(tmp_path):
    """A 64x128 data-set tile is half of a frame 128 model pixels wide: scale 1, the model
    on the tile itself (what training and ``marsedge eval`` do)."""
    from marsedge.edge_runtime.tile_model import TileModel

    tiles, _ = generate_tiles(3, 64, 128, seed=5)
    direct = TileModel.from_file(BUNDLED).predict_masks(tiles)
    cropped = Segmenter(BUNDLED, frame_width=128)
    assert cropped.scale == 1.0
    for tile, expected in zip(tiles, direct):
        assert np.array_equal(cropped.segment(tile).mask, expected)
    image = save_png(tmp_path / "tile.png", tiles[0])
    result = CliRunner().invoke(
        app, [str(image), "--model", str(BUNDLED), "--out", str(tmp_path / "out"), "--json", "--frame-width", "128"]
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["scale"] == 1.0 and record["model_pixels_per_frame"] == 128
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "tile_mask.png")), direct[0])


def test_json_states_the_resize_of_a_whole_frame(tmp_path, navcam_256):
    image = save_png(tmp_path / "frame.png", np.asarray(Image.fromarray(navcam_256).resize((512, 512))))
    result = CliRunner().invoke(app, [str(image), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["model_pixels_per_frame"] == 128 and record["scale"] == 0.25
    assert record["size"] == {"width": 512, "height": 512}
    assert Image.open(tmp_path / "out" / "frame_mask.png").size == (512, 512)


def test_scale_override_and_options(navcam_256):
    explicit = Segmenter(BUNDLED, scale=0.5)
    frame = np.asarray(Image.fromarray(navcam_256).resize((512, 512)))
    assert explicit.segment(frame).scale == 0.5  # fixed, whatever the size
    options = SegmenterOptions(model=BUNDLED, frame_width=256)
    rebuilt = Segmenter.from_options(options)
    assert rebuilt.options == options and rebuilt.scale == 0.5


def test_old_input_scale_model_loads_with_a_notice(tiny_int8, tmp_path, caplog):
    data = tiny_int8.read_bytes()
    metadata = read_metadata(data)
    metadata["input"]["scale"] = 0.5
    metadata["format"] = "marsedge-tflite/1"
    old = tmp_path / "old.tflite"
    old.write_bytes(embed_metadata(data, metadata))
    with caplog.at_level(logging.WARNING):
        segmenter = Segmenter(old)
    notices = [r.getMessage() for r in caplog.records if "input.scale" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0]
    frame = np.random.default_rng(0).integers(0, 256, (1024, 1024), dtype=np.uint8)
    assert segmenter.segment(frame).scale == 0.5  # as before: a fixed factor
    assert segmenter.classes[0].name == "unlabeled"  # "background" in the old file
    with pytest.raises(ValueError, match="frame_width needs a model"):
        Segmenter(old, frame_width=1024)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scale", "0"], "--scale: scale must be a finite number above 0"),
        (["--scale", "-1"], "--scale: scale must be a finite number above 0"),
        (["--scale", "nan"], "--scale: scale must be a finite number above 0"),
        (["--scale", "inf"], "--scale: scale must be a finite number above 0"),
        (["--scale", "1000"], "--scale: scale 1000 (model pixels per input pixel) is outside"),
        (["--frame-width", "0"], "--frame-width: frame_width must be a finite number above 0"),
        (["--frame-width", "nan"], "--frame-width: frame_width must be a finite number above 0"),
        (["--frame-width", "2"], "--frame-width: frame_width 2 gives a resize of 64 model pixels per input pixel"),
        (["--frame-width", "1024", "--scale", "0.5"], "give --frame-width or --scale, not both"),
    ],
)
def test_bad_overrides_give_one_line_usage_errors(tmp_path, args, expected):
    image = save_png(tmp_path / "frame.png", np.zeros((64, 128), np.uint8))
    result = CliRunner().invoke(app, [str(image), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines


def test_field_of_view_rule():
    view = FieldOfView(128)
    assert view.frame_scale(256, 256) == 0.5
    assert view.frame_scale(960, 1280) == view.frame_scale(1280, 960) == 0.1  # the longer side
    assert view.override_scale() is None
    assert view.override_scale(frame_width=512) == 0.25
    assert view.override_scale(scale=0.3) == 0.3
    assert FieldOfView(None).frame_scale(100, 300) == 1.0  # no field of view: as it comes
    for bad in (math.nan, math.inf, -2.0, 0, True):
        with pytest.raises(ValueError):
            view.override_scale(scale=bad)


def test_metadata_writer_and_reader_agree(tiny_int8):
    document = build_metadata(
        name="m", precision="int8-qat", height=64, width=128, output_classes=[1, 2, 3, 4],
        normalization={"mean": 60.0, "std": 26.0, "in_model": False}, model_pixels_per_frame=128,
    )  # fmt: skip
    data = embed_metadata(_strip_archive(tiny_int8.read_bytes()), document)
    assert read_metadata(data) == document
    assert [c.name for c in class_table(document)] == ["unlabeled", "soil", "bedrock", "sand", "big_rock"]
    assert FieldOfView.from_metadata(document) == FieldOfView(128.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scale": 0.5}, "input.scale is a marsedge-tflite/1 key"),
        ({"model_pixels_per_frame": 0}, "model_pixels_per_frame must be a number"),
        ({"model_pixels_per_frame": "128"}, "model_pixels_per_frame must be a number"),
        ({"model_pixels_per_frame": float("nan")}, "model_pixels_per_frame must be a number"),
        ({"model_pixels_per_frame": 1e9}, "model_pixels_per_frame must be a number"),
    ],
)
def test_bad_field_of_view_is_refused(tiny_int8, change, message):
    data = tiny_int8.read_bytes()
    metadata = restamp(read_metadata(data), 128)
    metadata["input"].update(change)
    with pytest.raises(ModelError, match=message):
        read_metadata(embed_metadata(data, metadata))


def test_restamp_keeps_the_flatbuffer(tiny_int8, tmp_path):
    path = with_field_of_view(tiny_int8, tmp_path, 256)
    assert _strip_archive(path.read_bytes()) == _strip_archive(tiny_int8.read_bytes())
    assert read_metadata(path)["input"]["model_pixels_per_frame"] == 256


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((2048, 2048), (128, 128)),
        ((1280, 960), (128, 96)),
        ((768, 1024), (96, 128)),
        ((256, 256), (128, 128)),
        ((300, 300), (100, 100)),
    ],
)
def test_fast_area_reduction_matches_the_exact_mean(shape, size):
    image = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    exact = np.floor(_resize_axis(_resize_axis(image.astype(np.float32), size[0], 0), size[1], 1) + 0.5)
    assert np.array_equal(resize_area(image, *size), exact.astype(np.uint8))


@pytest.mark.parametrize("size", [(1024, 1024), (1000, 771), (96, 128), (37, 250), (7, 3)])
def test_nearest_resize_takes_the_pixel_under_each_centre(size):
    mask = np.random.default_rng(5).integers(0, 5, (128, 96), dtype=np.uint8)
    centres = [np.minimum(((np.arange(n) + 0.5) * (m / n)).astype(int), m - 1) for m, n in zip(mask.shape, size)]
    resized = resize_nearest(mask, *size)
    assert resized.flags.c_contiguous and np.array_equal(resized, mask[centres[0][:, None], centres[1][None, :]])
    weights = nearest_weights(mask.shape, *size)  # frame pixels per mask pixel
    assert np.array_equal(np.bincount(mask.ravel(), weights.ravel(), 5), np.bincount(resized.ravel(), minlength=5))

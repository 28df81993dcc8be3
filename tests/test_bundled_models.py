"""The models that ship in the package are found by name, carry their own contract and
segment a whole frame; a file of that name in the working directory still wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marsedge.edge_runtime import Segmenter
from marsedge.edge_runtime.segmenter import BUNDLED_MODELS, DEFAULT_MODEL, model_path
from marsedge.train.synthetic import generate_frame


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_bundled_model_by_name_segments_a_1024_frame(name):
    segmenter = Segmenter(name, threads=1)
    assert segmenter.model_path == BUNDLED_MODELS[name] and segmenter.model_path.is_file()
    assert segmenter.metadata["input"]["model_pixels_per_frame"] == 128
    assert segmenter.metadata["model_name"] == f"marsedge-{name}"
    assert segmenter.metadata["precision"] == "int8-qat"
    frame = generate_frame(1024, 1024, seed=4)[0]
    result = segmenter.segment(frame)
    assert result.mask.shape == frame.shape and set(np.unique(result.mask)) <= {1, 2, 3, 4}


@pytest.mark.parametrize("path", sorted(DEFAULT_MODEL.parent.glob("*.tflite")), ids=lambda p: p.name)
def test_every_bundled_file_carries_a_temperature_fitted_on_its_val_split(path):
    from marsedge.edge_runtime.metadata import read_metadata

    calibration = read_metadata(path)["calibration"]  # tools/bundle_model.py --calibrate
    assert calibration["fitted_on"] == "val" and 0.5 < calibration["temperature"] < 2
    assert calibration["ece_after"] < calibration["ece_before"] and calibration["pixels"] > 1_000_000


def test_a_local_file_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_path(None) == DEFAULT_MODEL and model_path("navcam") == DEFAULT_MODEL
    (tmp_path / "navcam").write_bytes(b"")
    assert model_path("navcam").resolve() == (tmp_path / "navcam").resolve()


FRAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ai4mars-msl-256"


def test_default_model_takes_a_whole_frame_and_records_how_it_was_made():
    metadata = Segmenter(None, threads=1).metadata
    assert (metadata["input"]["height"], metadata["input"]["width"]) == (128, 128)
    assert metadata["recipe"] == "configs/navcam.json"
    recipe = json.loads((Path(__file__).resolve().parents[1] / metadata["recipe"]).read_text())
    assert recipe["init_from"].endswith(BUNDLED_MODELS["navcam-tiles"].name.replace("int8", "float32"))
    # the file is the recipe's mix: its share of the robust fine-tune, the partner run beside it
    assert metadata["interpolation"]["alpha"] == recipe["mix_alpha"] and 0 < recipe["mix_alpha"] < 1
    assert metadata["interpolation"]["partner"] == "mixed_with"


@pytest.mark.realdata
@pytest.mark.skipif(not FRAMES.is_dir(), reason="needs ../shared/data/ai4mars-msl-256")
def test_default_model_holds_up_under_blur_and_noise_where_the_tile_model_does_not():
    """24 labelled test frames: the default keeps most of its clean mIoU under a radius-1
    blur and noise of sigma 4; the tile model it started from loses about half."""
    from marsedge.benchmarks.corruptions import corruption_table, select_frames
    from marsedge.benchmarks.frames import read_ai4mars_frames

    positions = select_frames(DEFAULT_MODEL, FRAMES, "test", count=24)
    images, masks = read_ai4mars_frames(FRAMES, positions)
    shares = {}
    for name in ("navcam", "navcam-tiles"):
        table = corruption_table(Segmenter(name, threads=1), images, masks, names=("noise", "blur"))
        shares[name] = {(r["corruption"], r["level"]): r["share"] for r in table["rows"]}
    for condition in (("noise", 4), ("blur", 1)):
        assert shares["navcam"][condition] >= 0.75, (condition, shares)
        assert shares["navcam"][condition] > shares["navcam-tiles"][condition] + 0.2, (condition, shares)

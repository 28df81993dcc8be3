"""The runtime reproduces golden masks made by tools/make_test_model.py.

Tile goldens come from TensorFlow's own interpreter on the int8 model; the frame golden
from the float Keras model run on the whole frame at once, so the frame test also checks
that tiling and stitching lose almost nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GOLDEN, SAMPLES
from PIL import Image

from marsedge.edge_runtime import Segmenter

NAMES = ["tile0", "tile1", "tile2", "frame0"]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reference_kernels", [False, True], ids=["optimised", "reference"])
def test_int8_masks_match_golden(tiny_int8, name, reference_kernels):
    segmenter = Segmenter(tiny_int8, reference_kernels=reference_kernels)
    image = np.array(Image.open(GOLDEN / f"{name}.png"))
    golden = np.array(Image.open(GOLDEN / f"{name}_mask.png"))
    assert agreement(segmenter.segment(image).mask, golden) >= 0.99


def test_float_model_matches_golden(tiny_float32, golden_frame):
    golden = np.array(Image.open(GOLDEN / "frame0_mask.png"))
    assert agreement(Segmenter(tiny_float32).segment(golden_frame).mask, golden) >= 0.99


def test_golden_masks_use_several_classes():
    # Guards the golden test itself: a constant mask would make agreement meaningless.
    for name in NAMES:
        golden = np.array(Image.open(GOLDEN / f"{name}_mask.png"))
        assert len(np.unique(golden)) >= 2


@pytest.mark.realdata
@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/data/samples not present")
def test_real_samples_optimised_and_reference_kernels_agree(tiny_int8):
    fast, reference = Segmenter(tiny_int8), Segmenter(tiny_int8, reference_kernels=True)
    paths = sorted(SAMPLES.glob("*.png"))
    assert paths
    for path in paths:
        image = np.array(Image.open(path).convert("L"))
        mask = reference.segment(image).mask
        assert mask.shape == image.shape
        assert set(np.unique(mask)) <= {1, 2, 3, 4}
        # XNNPACK rounds int8 differently from the reference kernels; the tiny model,
        # trained on synthetic tiles only, has many near-ties on real frames (~98% agree).
        assert agreement(fast.segment(image).mask, mask) >= 0.95


@pytest.mark.realdata
@pytest.mark.skipif(
    not (SAMPLES.is_dir() and (SAMPLES.parent / "mars_terrain_64x128.npz").exists()),
    reason="../shared/data not present",
)
def test_runtime_resize_reproduces_the_data_sets_tiles_from_full_frames():
    """The sample frames are test_set frames at 256x256; the runtime's area reduction
    (what a model with ``input.scale`` 0.5 sees) gives back their two 64x128 tiles to the
    grey level. Texture is the models' main cue (`marsedge eval --corruptions`: a blur of
    radius 1 or sensor noise of sigma 2 costs 25-70 points), so any other resampler
    (bilinear, bicubic: 0.6-1 level off on average) would feed them foreign input."""
    from marsedge.edge_runtime.resample import resize_area

    with np.load(SAMPLES.parent / "mars_terrain_64x128.npz") as data:
        tiles = data["test_set"]
    lookup = {tile.tobytes(): i for i, tile in enumerate(tiles)}
    paths = sorted(SAMPLES.glob("*.png"))
    assert paths
    for path in paths:
        frame = np.array(Image.open(path).convert("L"))
        half = resize_area(frame, frame.shape[0] // 2, frame.shape[1] // 2)
        top, bottom = np.ascontiguousarray(half[:64]), np.ascontiguousarray(half[64:])
        assert top.tobytes() in lookup and bottom.tobytes() in lookup, path.name

"""Sliding tiles: coverage, padding, full frames, and no seams where tiles meet."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marsedge.edge_runtime import Segmenter
from marsedge.edge_runtime.tiling import pad_to, ramp, tile_origins


@given(tile=st.integers(1, 200), extra=st.integers(0, 2000), data=st.data())
def test_tiles_cover_every_pixel_and_stay_inside(tile, extra, data):
    overlap = data.draw(st.integers(0, tile - 1))
    length = tile + extra
    origins = tile_origins(length, tile, overlap)
    assert origins[0] == 0 and origins[-1] == length - tile
    assert origins == sorted(set(origins))
    steps = np.diff(origins)
    assert (steps <= tile - overlap).all()  # neighbours share at least `overlap` pixels
    covered = np.zeros(length, bool)
    for o in origins:
        covered[o : o + tile] = True
    assert covered.all()


def test_origins_reject_bad_arguments():
    with pytest.raises(ValueError, match="pad first"):
        tile_origins(10, 64, 0)
    with pytest.raises(ValueError, match="overlap must be in 0..63"):
        tile_origins(100, 64, 64)


def test_ramps_cross_fade_to_a_constant():
    weights = ramp(64, 16)
    assert (weights > 0).all()
    # Across a 16-pixel overlap, the falling edge of one tile plus the rising edge of the
    # next is constant: a linear cross-fade.
    assert len(set(weights[-16:] + weights[:16])) == 1


def test_pad_mirrors_small_images_and_keeps_large_ones():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    padded = pad_to(image, 4, 5)
    assert padded.shape == (4, 5)
    np.testing.assert_array_equal(padded[:2, :3], image)
    np.testing.assert_array_equal(padded[2:, :3], image[::-1])
    assert pad_to(padded, 2, 2) is padded
    assert pad_to(np.zeros((1, 1), np.uint8), 64, 128).shape == (64, 128)


def test_full_navcam_frame(segmenter):
    frame = np.random.default_rng(0).integers(0, 256, (1024, 1024), dtype=np.uint8)
    result = segmenter.segment(frame)
    assert result.mask.shape == (1024, 1024) and result.mask.dtype == np.uint8
    assert set(np.unique(result.mask)) <= {1, 2, 3, 4}
    assert result.tiles == len(tile_origins(1024, 64, 16)) * len(tile_origins(1024, 128, 16))


@pytest.mark.parametrize("shape", [(1, 1), (5, 300), (300, 7), (64, 128), (65, 129), (63, 127)])
def test_any_size_gives_a_mask_of_that_size(segmenter, shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert segmenter.segment(image).mask.shape == shape


def stripes(size: int = 512) -> np.ndarray:
    """Vertical stripes 37 px wide, grey levels the tiny model tells apart; constant
    down each column, so every column's true mask is constant too."""
    levels = np.array([90, 140, 110, 200, 60, 125, 170], np.uint8)
    return np.tile(levels[(np.arange(size) // 37) % len(levels)], (size, 1))


@pytest.mark.parametrize("transpose", [False, True], ids=["row-seams", "column-seams"])
def test_stripes_across_tile_borders_have_no_seams(segmenter, transpose):
    image = stripes().T.copy() if transpose else stripes()
    mask = segmenter.segment(image).mask
    mask = mask.T if transpose else mask
    assert len(np.unique(mask)) >= 2
    # Leave out the frame's own edges, where the model sees zero padding; tile borders
    # (every 48 rows, every 112 columns) are inside.
    inner = mask[8:-8]
    column_mode = np.array([np.bincount(column).argmax() for column in inner.T])
    assert (inner == column_mode).mean() >= 0.995


def test_tta_mirrors_and_keeps_the_shape(tiny_int8, golden_frame):
    plain, tta = Segmenter(tiny_int8), Segmenter(tiny_int8, tta=True)
    result = tta.segment(golden_frame)
    assert result.tiles == plain.segment(golden_frame).tiles  # the tiles covering the frame, mirrored or not
    # A horizontally mirrored frame gives the mirrored mask: TTA is symmetric by design.
    mirrored = tta.segment(np.ascontiguousarray(golden_frame[:, ::-1])).mask
    assert (mirrored[:, ::-1] == result.mask).mean() >= 0.99
    assert (result.mask == plain.segment(golden_frame).mask).mean() >= 0.95

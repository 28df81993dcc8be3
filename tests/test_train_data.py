"""Loading, validation, cleaning and splitting of labelled tiles."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marsedge.errors import DataError
from marsedge.train.data import (
    TileSet,
    class_weights,
    clean_tiles,
    frame_groups,
    load_tiles,
    stratified_split,
)
from marsedge.train.synthetic import generate_dataset, generate_tiles

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mars_terrain_64x128.npz"


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_an2dl_layout(tmp_path):
    data = generate_dataset(8, seed=1)
    tiles = load_tiles(_write_npz(tmp_path / "d.npz", **data))
    assert tiles.images.shape == (8, 64, 128) and tiles.images.dtype == np.uint8
    np.testing.assert_array_equal(tiles.masks, data["training_set"][:, 1])


def test_float_images_as_in_original_an2dl_file(tmp_path):
    images, masks = generate_tiles(4, seed=2)
    for scale in (1.0, 1 / 255.0):
        stacked = np.stack([images.astype(np.float64) * scale, masks.astype(np.float64)], axis=1)
        tiles = load_tiles(_write_npz(tmp_path / f"f{scale}.npz", training_set=stacked))
        np.testing.assert_array_equal(tiles.images, images)
        assert tiles.masks.dtype == np.uint8


def test_images_and_masks_keys(tmp_path):
    images, masks = generate_tiles(4, seed=3)
    tiles = load_tiles(_write_npz(tmp_path / "d.npz", images=images, masks=masks))
    assert len(tiles) == 4


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"training_set": np.zeros((4, 3, 8, 8), np.uint8)}, "shape (N, 2, H, W)"),
        ({"something": np.zeros((4, 2, 8, 8), np.uint8)}, "expected a 'training_set'"),
        ({"training_set": np.stack([np.zeros((2, 8, 8)), np.full((2, 8, 8), 7.0)], 1)}, "class ids 0..4"),
        ({"training_set": np.stack([np.zeros((2, 8, 8)), np.full((2, 8, 8), 1.5)], 1)}, "fractional"),
        ({"training_set": np.zeros((2, 2, 8, 8), dtype=np.complex64)}, "dtype"),
        ({"training_set": np.stack([np.full((2, 8, 8), 300.0), np.zeros((2, 8, 8))], 1)}, "0..255"),
    ],
)
def test_bad_npz_layouts_name_the_file_and_problem(tmp_path, arrays, message):
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        load_tiles(path)
    assert str(path) in str(info.value)


def test_not_an_npz_and_missing_file(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_tiles(junk)
    with pytest.raises(DataError, match="no such file"):
        load_tiles(tmp_path / "missing.npz")


def _write_pairs(folder: Path, layout: str, count: int = 3) -> None:
    images, masks = generate_tiles(count, seed=4)
    for i in range(count):
        if layout == "subfolders":
            (folder / "images").mkdir(parents=True, exist_ok=True)
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / "images" / f"t{i}.png")
            Image.fromarray(masks[i]).save(folder / "masks" / f"t{i}.png")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"t{i}.png")
            Image.fromarray(masks[i]).save(folder / f"t{i}_mask.png")


@pytest.mark.parametrize("layout", ["subfolders", "suffix"])
def test_png_folder_layouts(tmp_path, layout):
    _write_pairs(tmp_path / "d", layout)
    tiles = load_tiles(tmp_path / "d")
    expected_images, expected_masks = generate_tiles(3, seed=4)
    np.testing.assert_array_equal(tiles.images, expected_images)
    np.testing.assert_array_equal(tiles.masks, expected_masks)


def test_png_folder_errors(tmp_path):
    _write_pairs(tmp_path / "d", "suffix")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "d" / "t0_mask.png")
    with pytest.raises(DataError, match="differs from image size"):
        load_tiles(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_tiles(tmp_path / "e")
    _write_pairs(tmp_path / "f", "suffix")
    (tmp_path / "f" / "t1_mask.png").unlink()
    with pytest.raises(DataError, match="no matching mask"):
        load_tiles(tmp_path / "f")


def test_cleaning_finds_planted_outliers():
    images, masks = generate_tiles(40, seed=5)
    images, masks = images.copy(), masks.copy()
    masks[3] = 0  # all unlabeled
    placeholder = masks[10].copy()
    placeholder[:, :64] = 2
    placeholder[:, 64:] = 3
    for i in (11, 12, 13, 14, 15):  # one multi-class mask on five different images
        masks[i] = placeholder
    images[20], masks[20] = images[21], masks[21]  # exact duplicate of 21... 20 comes first
    uniform = masks[30].copy()
    uniform[uniform > 0] = 1
    for i in (30, 31, 32, 33, 34):  # uniform soil masks recur legitimately: kept
        masks[i] = uniform
    keep, report = clean_tiles(TileSet(images, masks))
    assert report.all_unlabeled == [3]
    assert report.shared_mask == [11, 12, 13, 14, 15]
    assert report.duplicates == [21]
    assert set(range(30, 35)) <= set(keep.tolist())
    assert len(keep) == 40 - 1 - 5 - 1


def test_frame_groups_pairs_halves_of_one_frame():
    images, _ = generate_tiles(40, seed=6)
    np.testing.assert_array_equal(frame_groups(images), np.arange(40) // 2)
    shuffled = images[np.random.default_rng(0).permutation(40)]
    assert len(np.unique(frame_groups(shuffled))) == 40


def test_split_keeps_rare_class_in_validation_and_frames_together():
    images, masks = generate_tiles(200, seed=7)
    groups = frame_groups(images)
    split = stratified_split(masks, groups, 0.1, 0.1, seed=0)
    assert sum(len(v) for v in split.values()) == 200
    for name in ("val", "test"):
        assert (masks[split[name]] == 4).any(), f"no big rock in {name}"
    assignment = {}
    for name, index in split.items():
        for i in index:
            assert assignment.setdefault(groups[i], name) == name
    again = stratified_split(masks, groups, 0.1, 0.1, seed=0)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    other = stratified_split(masks, groups, 0.1, 0.1, seed=1)
    assert not np.array_equal(split["val"], other["val"])


def test_class_weights_favour_rare_classes_and_skip_background():
    masks = np.zeros((1, 10, 100), np.uint8)
    masks[0, :, :50] = 1
    masks[0, :, 50:90] = 2
    masks[0, :, 90:99] = 3
    masks[0, :, 99] = 4
    weights = class_weights(masks, "inverse_sqrt", ignore_background=True)
    assert weights[0] == 0
    assert weights[4] > weights[3] > weights[2] > weights[1]
    assert np.isclose(weights[1:].mean(), 1.0)
    assert np.allclose(class_weights(masks, "none", True)[1:], 1.0)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.exists(), reason="../shared/data not present")
def test_real_file_layout_and_hygiene():
    tiles = load_tiles(REAL_DATA)
    assert tiles.images.shape == (12000, 64, 128)
    groups = frame_groups(tiles.images)
    assert groups[-1] == 5999  # halves of one frame are paired
    keep, report = clean_tiles(tiles)
    assert report.summary()["all_unlabeled"] == 211
    assert len(keep) == 12000 - len(report.dropped)

"""Tests for the procedural Mars terrain generator (numpy + Pillow only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from marsedge.train.synthetic import (
    CLASS_NAMES,
    generate_dataset,
    generate_frame,
    generate_tiles,
    write_dataset,
    write_png_frames,
)

SOIL, BEDROCK, SAND, BIG_ROCK = 1, 2, 3, 4


@pytest.fixture(scope="module")
def tiles() -> tuple[np.ndarray, np.ndarray]:
    return generate_tiles(64, seed=0)


def _interior_gradient(images: np.ndarray, masks: np.ndarray, cls: int) -> float:
    """Mean central-difference gradient over pixels whose 4 neighbours share ``cls``."""
    img = images.astype(np.float32)
    grad_x = np.abs(img[:, 1:-1, 2:] - img[:, 1:-1, :-2])
    grad = grad_x + np.abs(img[:, 2:, 1:-1] - img[:, :-2, 1:-1])
    centre = masks[:, 1:-1, 1:-1]
    same = (
        (masks[:, 1:-1, 2:] == centre)
        & (masks[:, 1:-1, :-2] == centre)
        & (masks[:, 2:, 1:-1] == centre)
        & (masks[:, :-2, 1:-1] == centre)
    )
    return float(grad[same & (centre == cls)].mean())


def test_class_names_match_mask_ids():
    assert CLASS_NAMES == ("unlabeled", "soil", "bedrock", "sand", "big_rock")


def test_tiles_shapes_and_dtypes(tiles):
    images, masks = tiles
    assert images.shape == masks.shape == (64, 64, 128)
    assert images.dtype == masks.dtype == np.uint8
    assert masks.max() <= 4
    odd_images, odd_masks = generate_tiles(3, height=32, width=48, seed=2)
    assert odd_images.shape == odd_masks.shape == (3, 32, 48)


def test_tiles_are_deterministic_and_seed_sensitive(tiles):
    images, masks = tiles
    again_images, again_masks = generate_tiles(64, seed=0)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(masks, again_masks)
    other_images, other_masks = generate_tiles(64, seed=1)
    assert np.mean(images != other_images) > 0.5
    assert np.mean(masks != other_masks) > 0.2


def test_more_tiles_extend_fewer(tiles):
    images, masks = tiles
    few_images, few_masks = generate_tiles(5, seed=0)
    np.testing.assert_array_equal(few_images, images[:5])
    np.testing.assert_array_equal(few_masks, masks[:5])


def test_class_shares_look_like_navcam_labels(tiles):
    _, masks = tiles
    share = np.bincount(masks.ravel(), minlength=5) / masks.size
    assert np.all(share > 0), share
    assert 0.1 < share[0] < 0.5, share  # sky, far field, skipped patches
    assert 0.0 < share[BIG_ROCK] < 0.05, share
    assert share[BIG_ROCK] < min(share[SOIL], share[BEDROCK], share[SAND])
    tiles_with_rock = np.mean((masks == BIG_ROCK).any(axis=(1, 2)))
    assert 0.1 < tiles_with_rock < 0.6


def test_tile_pairs_are_halves_of_one_frame(tiles):
    images = tiles[0].astype(np.float32)
    seam = np.abs(images[0::2, -1] - images[1::2, 0]).mean()
    unrelated = np.abs(images[1:-1:2, -1] - images[2::2, 0]).mean()
    assert seam < 0.4 * unrelated, (seam, unrelated)

    frame_image, frame_mask = generate_frame(128, 128, seed=0)
    np.testing.assert_array_equal(frame_image, np.concatenate(tiles[0][:2]))
    np.testing.assert_array_equal(frame_mask, np.concatenate(tiles[1][:2]))


def test_textures_tell_classes_apart(tiles):
    images, masks = tiles
    soil, bedrock, sand = (_interior_gradient(images, masks, c) for c in (SOIL, BEDROCK, SAND))
    # Grainy soil > rippled sand > smooth slabs, by clear margins.
    assert soil > 1.4 * sand, (soil, sand)
    assert sand > 1.2 * bedrock, (sand, bedrock)


def test_rocks_are_bright(tiles):
    images, masks = tiles
    labelled = masks > 0
    assert images[masks == BIG_ROCK].mean() > images[labelled].mean() + 10


def test_large_frame():
    image, mask = generate_frame(1024, 1024, seed=3)
    assert image.shape == mask.shape == (1024, 1024)
    assert image.dtype == mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(5))
    assert {SOIL, BEDROCK} <= set(np.unique(mask))
    assert image.std() > 10


def test_frame_any_size_and_seed():
    image, mask = generate_frame(40, 72, seed=11)
    assert image.shape == mask.shape == (40, 72)
    assert not np.array_equal(image, generate_frame(40, 72, seed=12)[0])


def test_dataset_layout_and_round_trip(tmp_path):
    data = generate_dataset(20, seed=4)
    assert set(data) == {"training_set", "test_set"}
    assert data["training_set"].shape == (20, 2, 64, 128)
    assert data["test_set"].shape == (2, 64, 128)
    assert data["training_set"].dtype == data["test_set"].dtype == np.uint8
    assert data["training_set"][:, 1].max() <= 4
    # Test tiles come from frames after the training frames.
    train_images = data["training_set"][:, 0]
    for test_image in data["test_set"]:
        assert not any(np.array_equal(test_image, t) for t in train_images)
    assert generate_dataset(3)["test_set"].shape == (1, 64, 128)

    path = tmp_path / "sub" / "mars.npz"
    path.parent.mkdir()
    path.write_bytes(b"stale")  # replaced, not appended to
    assert write_dataset(path, 20, seed=4) == path
    with np.load(path) as loaded:
        np.testing.assert_array_equal(loaded["training_set"], data["training_set"])
        np.testing.assert_array_equal(loaded["test_set"], data["test_set"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["mars.npz"]  # no temp left


def test_write_png_frames(tmp_path):
    paths = write_png_frames(tmp_path / "frames", 3, size=64, seed=5)
    assert [p.name for p in paths] == [f"synthetic_{i:03d}.png" for i in range(3)]
    first = Image.open(paths[0])
    assert first.mode == "L" and first.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(first), generate_frame(64, 64, seed=5)[0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: generate_tiles(0),
        lambda: generate_tiles(4, height=2),
        lambda: generate_frame(4, 64),
        lambda: generate_frame(64, 64, seed=-1),
        lambda: generate_tiles(2.5),
        lambda: write_png_frames("unused", 0),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_imports_no_tensorflow():
    code = (
        "import sys, marsedge.train.synthetic; "
        "heavy = {'tensorflow', 'tf_keras', 'keras'}; "
        "assert not any(m.split('.')[0] in heavy for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

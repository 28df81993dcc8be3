"""Whole AI4Mars frames as training data: the release layout, split inheritance, robust augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from marsedge.errors import DataError
from marsedge.train.data import load_ai4mars, load_tiles
from marsedge.train.synthetic import write_ai4mars


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ai4mars")
    write_ai4mars(root, count=12, size=128, seed=3, unlabeled=2)
    return root


def test_release_layout_loads_whole_frames_and_counts_unlabelled(frames_root):
    frames = load_tiles(frames_root, frame_pixels=32)
    assert frames.images.shape == (12, 32, 32) and frames.masks.shape == (12, 32, 32)
    assert frames.sources.shape == (12, 64, 64)
    assert frames.skipped["without_label"] == 2
    # AI4Mars coding 0..3 / 255 becomes marsedge ids 1..4 / 0
    label = np.asarray(Image.open(sorted((frames_root / "msl/ncam/labels/train").iterdir())[0]))
    expected = np.where(label == 255, 0, label + 1)
    source = np.asarray(Image.fromarray(expected.astype(np.uint8)).resize((64, 64), Image.NEAREST))[::2, ::2]
    assert np.array_equal(frames.masks[0], source)
    # the model-resolution frame is the camera-resolution one reduced 2x (as the shared tiles were made)
    reduced = np.rint(frames.sources[0].astype(np.float64).reshape(32, 2, 32, 2).mean(axis=(1, 3)))
    assert np.abs(reduced - frames.images[0]).max() <= 1


def test_rover_mask_pixels_become_unlabeled(tmp_path):
    base = write_ai4mars(tmp_path, count=2, size=64, seed=1)
    first = sorted((base / "images/edr").iterdir())[0].stem
    rover = np.zeros((64, 64), np.uint8)
    rover[40:, :] = 1
    (base / "images/mxy").mkdir()
    Image.fromarray(rover).save(base / "images/mxy" / f"{first.replace('EDR', 'MXY')}.png")
    frames = load_ai4mars(tmp_path, frame_pixels=64)
    assert (frames.masks[0][40:] == 0).all()
    assert frames.masks[0][:40].any()


def test_bad_label_values_name_the_file(tmp_path):
    base = write_ai4mars(tmp_path, count=2, size=64, seed=1)
    label_path = sorted((base / "labels/train").iterdir())[1]
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(label_path)
    with pytest.raises(DataError, match=label_path.name):
        load_ai4mars(tmp_path, frame_pixels=32)


def test_unreadable_frame_names_the_file(tmp_path):
    base = write_ai4mars(tmp_path, count=2, size=64, seed=1)
    image_path = sorted((base / "images/edr").iterdir())[0]
    image_path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=image_path.name):
        load_ai4mars(tmp_path, frame_pixels=32)


def test_frames_inherit_the_split_of_the_tiles_cut_from_them(tmp_path):
    from marsedge.train.config import TrainConfig
    from marsedge.train.trainer import compute_split

    write_ai4mars(tmp_path / "frames", count=40, size=128, seed=5)
    frames = load_ai4mars(tmp_path / "frames", frame_pixels=64)
    # the tile file: each 64x64 frame cut into a top and a bottom 32x64 tile, as the shared file was
    tiles = np.stack([frames.images[:, :32], frames.images[:, 32:]], axis=1).reshape(-1, 32, 64)
    masks = np.stack([frames.masks[:, :32], frames.masks[:, 32:]], axis=1).reshape(-1, 32, 64)
    np.savez(tmp_path / "tiles.npz", training_set=np.stack([tiles, masks], axis=1))
    config = TrainConfig(
        data=str(tmp_path / "frames"),
        split_from=str(tmp_path / "tiles.npz"),
        frame_pixels=64,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    _, split, derived, _ = compute_split(config)
    _, tile_split, _, _ = compute_split(config.replace(data=str(tmp_path / "tiles.npz"), split_from=None))
    for name in ("train", "val", "test"):
        assert set(split[name]) == set(tile_split[name] // 2), name
    assert derived["input_shape"] == [64, 64] and derived["whole_frames"]


def test_corruption_benchmark_scores_the_test_or_the_val_frames_of_a_frame_run(tmp_path):
    """``marsedge eval --corruptions --split val`` chooses between models on val frames, never test ones."""
    import json

    from marsedge.benchmarks.corruptions import select_frames
    from marsedge.errors import UsageError
    from marsedge.train.config import TrainConfig
    from marsedge.train.trainer import compute_split

    write_ai4mars(tmp_path / "frames", count=40, size=64, seed=5)
    config = TrainConfig(data=str(tmp_path / "frames"), frame_pixels=32, val_fraction=0.2, test_fraction=0.2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    _, split, _, _ = compute_split(config)
    picked = {name: select_frames(tmp_path / "run", tmp_path / "frames", name, path) for name in ("val", "test")}
    for name, positions in picked.items():
        assert sorted(positions) == sorted(split[name]), name
    assert not set(picked["val"]) & set(picked["test"])
    assert len(select_frames(tmp_path / "run", tmp_path / "frames", "val", path, count=3)) == 3
    with pytest.raises(UsageError, match="not 'train'"):
        select_frames(tmp_path / "run", tmp_path / "frames", "train", path)


def test_a_frame_models_inherited_split_is_recomputed_from_the_tile_file_beside_its_frames(tmp_path):
    """`marsedge eval` / `bench` of a whole-frame .tflite: its recipe names the tile file its
    split came from (split_from); found beside the frames, the split is the one it trained on."""
    from marsedge.core.metadata import split_recipe
    from marsedge.errors import MarsEdgeError
    from marsedge.evaluation.evaluate import recipe_split
    from marsedge.train.config import TrainConfig
    from marsedge.train.data import file_sha256
    from marsedge.train.rundir import split_fingerprint
    from marsedge.train.trainer import compute_split

    write_ai4mars(tmp_path / "frames", count=40, size=64, seed=5)
    frames = load_ai4mars(tmp_path / "frames", frame_pixels=32)
    tiles = np.stack([frames.images[:, :16], frames.images[:, 16:]], axis=1).reshape(-1, 16, 32)
    masks = np.stack([frames.masks[:, :16], frames.masks[:, 16:]], axis=1).reshape(-1, 16, 32)
    np.savez(tmp_path / "tiles.npz", training_set=np.stack([tiles, masks], axis=1))
    config = TrainConfig(data=str(tmp_path / "frames"), split_from=str(tmp_path / "tiles.npz"), frame_pixels=32)
    _, split, _, digest = compute_split(config)
    metadata = {
        "split": split_recipe(config.to_dict(), config.data, digest),
        "source_split": split_fingerprint(split, digest),
    }
    assert metadata["split"]["split_from"] == "tiles.npz" and file_sha256(tmp_path / "frames") == digest
    _, recomputed = recipe_split(metadata, tmp_path / "frames")
    for name in ("train", "val", "test"):
        assert list(recomputed[name]) == list(split[name]), name
    (tmp_path / "tiles.npz").rename(tmp_path / "elsewhere.npz")
    with pytest.raises(MarsEdgeError, match="inherited from tiles.npz, which is not beside"):
        recipe_split(metadata, tmp_path / "frames")


def test_split_from_a_file_of_other_frames_is_refused(tmp_path):
    from marsedge.errors import MarsEdgeError
    from marsedge.train.config import TrainConfig
    from marsedge.train.synthetic import write_dataset
    from marsedge.train.trainer import compute_split

    write_ai4mars(tmp_path / "frames", count=10, size=64, seed=5)
    write_dataset(tmp_path / "tiles.npz", 64, seed=0)
    config = TrainConfig(data=str(tmp_path / "frames"), split_from=str(tmp_path / "tiles.npz"), frame_pixels=32)
    with pytest.raises(MarsEdgeError, match="split_from needs the tile file cut from exactly these frames"):
        compute_split(config)


def test_robust_augmentation_is_seeded_and_reduces_to_model_resolution(frames_root):
    from marsedge.train.augment import make_dataset

    frames = load_tiles(frames_root, frame_pixels=32)

    def first_batch():
        dataset = make_dataset(
            frames.images, frames.masks, 6, True, seed=1, epoch=2, augment="robust", sources=frames.sources
        )
        return next(iter(dataset))

    (x1, y1), (x2, y2) = first_batch(), first_batch()
    assert x1.shape == (6, 32, 32, 1) and y1.shape == (6, 32, 32)
    assert np.array_equal(x1.numpy(), x2.numpy()) and np.array_equal(y1.numpy(), y2.numpy())
    assert 0 <= x1.numpy().min() and x1.numpy().max() <= 255
    # most frames are corrupted: they differ from the clean reduction of their source
    clean = make_dataset(frames.images, frames.masks, 6, True, seed=1, epoch=2, augment="flips")
    xc, _ = next(iter(clean))
    changed = [not np.array_equal(a, b) for a, b in zip(x1.numpy(), xc.numpy())]
    assert sum(changed) >= 2


@pytest.mark.slow
def test_a_frame_run_trains_and_records_whole_frames(tmp_path):
    from marsedge.train import rundir
    from marsedge.train.config import ModelConfig, TrainConfig
    from marsedge.train.trainer import train

    write_ai4mars(tmp_path / "frames", count=24, size=64, seed=2)
    config = TrainConfig(
        data=str(tmp_path / "frames"),
        out=str(tmp_path / "run"),
        frame_pixels=32,
        epochs=2,
        batch_size=4,
        augment="robust",
        loss="cross_entropy",
        warmup_epochs=0,
        val_fraction=0.2,
        test_fraction=0.2,
        preview_tiles=2,
        model=ModelConfig(base_filters=4, depth=2, dilation_rates=(1,), stem_stride=2),
    )
    metrics = train(config, progress=False)
    run = rundir.read_run(tmp_path / "run")
    assert run.derived["input_shape"] == [32, 32] and run.derived["whole_frames"]
    assert 0.0 <= metrics["val"]["mean_iou"] <= 1.0

    # without --data, eval reads the run's own frames at the run's field of view, not the default tile file
    import json

    from typer.testing import CliRunner

    from marsedge.cli import app

    result = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--split", "val", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"] == str(tmp_path / "frames") and report["split"] == "val" and report["tiles"] > 0


def test_frames_no_larger_than_twice_the_model_have_no_camera_resolution(frames_root):
    frames = load_tiles(frames_root, frame_pixels=128)  # the frames are 128 px: nothing to reduce from
    assert frames.sources is None and frames.images.shape == (12, 128, 128)
    label = np.asarray(Image.open(sorted((frames_root / "msl/ncam/labels/train").iterdir())[0]))
    assert np.array_equal(frames.masks[0], np.where(label == 255, 0, label + 1))


def test_paired_batches_hold_each_frame_clean_then_corrupted(frames_root):
    from marsedge.train.augment import make_dataset

    frames = load_tiles(frames_root, frame_pixels=32)
    common = dict(seed=1, epoch=0, sources=frames.sources)
    x, y = next(iter(make_dataset(frames.images, frames.masks, 6, True, augment="robust", paired=True, **common)))
    assert x.shape == (12, 32, 32, 1) and y.shape == (12, 32, 32)
    assert np.array_equal(y.numpy()[0::2], y.numpy()[1::2])  # one mask (and one flip) for both views
    plain, _ = next(iter(make_dataset(frames.images, frames.masks, 6, True, augment="flips", seed=1, epoch=0)))
    clean = x.numpy()[0::2]
    # the clean view is the frame reduced from its camera resolution, flipped like its label
    assert np.abs(clean - plain.numpy()).max() <= 1 or any(
        np.abs(c - p[:, ::-1]).max() <= 1 for c, p in zip(clean, plain.numpy())
    )
    assert sum(not np.array_equal(a, b) for a, b in zip(clean, x.numpy()[1::2])) >= 2


def test_consistency_loss_scores_clean_views_and_pulls_the_pair_together():
    from marsedge.train.losses import make_consistency_loss, make_loss
    from marsedge.train.tf_env import tf

    base = make_loss("cross_entropy", np.ones(5, np.float32), 0.0)
    loss = make_consistency_loss(base, 10.0)
    masks = tf.constant(np.repeat(np.array([[[1, 2], [3, 4]]]), 4, axis=0), tf.int32)  # 2 pairs
    logits = np.random.default_rng(0).normal(size=(4, 2, 2, 4)).astype(np.float32)
    agreeing = logits.copy()
    agreeing[1::2] = logits[0::2]
    # identical views: only the task loss on the clean views remains
    assert abs(float(loss(masks, agreeing)) - float(base(masks[0::2], agreeing[0::2]))) < 1e-5
    # views that disagree cost more, whatever the augmented view's label score
    assert float(loss(masks, logits)) > float(base(masks[0::2], logits[0::2])) + 1e-3
    # the term moves the corrupted view only: the clean view's gradient is the task loss's
    variable = tf.Variable(logits)
    with tf.GradientTape(persistent=True) as tape:
        total, task = loss(masks, variable), base(masks[0::2], variable[0::2])
    with_term, task_only = tape.gradient(total, variable).numpy(), tape.gradient(task, variable).numpy()
    assert np.allclose(with_term[0::2], task_only[0::2], atol=1e-6) and np.abs(with_term[1::2]).max() > 0

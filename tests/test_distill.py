"""Knowledge distillation: soft targets through the pipeline, the loss, teacher runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf_env = pytest.importorskip("marsedge.train.tf_env")
tf = tf_env.tf

from marsedge.train.augment import make_dataset  # noqa: E402
from marsedge.train.distill import ensemble_probabilities, make_distill_loss, soft_class_weights  # noqa: E402
from marsedge.train.losses import make_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "mars_terrain_64x128.npz"
BUNDLED = ROOT / "marsedge" / "edge_runtime" / "models"


def test_soft_targets_are_flipped_with_their_tile_and_mask():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 5, (16, 8, 16)).astype(np.uint8)
    images = (masks * 40).astype(np.uint8)
    soft = np.eye(5, dtype=np.float16)[masks][..., 1:]  # one-hot of classes 1..4: the mask itself
    for augment in ("flips", "mild", "strong"):
        batches = list(make_dataset(images, masks, 8, True, seed=3, epoch=0, augment=augment, soft=soft))
        assert len(batches) == 2
        for tiles, labels in batches:
            labels = labels.numpy()
            assert labels.shape == (8, 8, 16, 5) and labels.dtype == np.float32
            ids, probs = labels[..., 0].astype(int), labels[..., 1:]
            labelled = ids > 0
            assert labelled.any()
            np.testing.assert_array_equal(probs.argmax(-1)[labelled] + 1, ids[labelled])
            if augment == "flips":  # the tile moved with its labels
                np.testing.assert_allclose(tiles.numpy()[..., 0], ids * 40.0)


def test_distill_loss_is_the_hard_loss_when_student_equals_teacher():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 8, 4)).astype(np.float32)
    masks = rng.integers(0, 5, (2, 4, 8)).astype(np.float32)
    hard = make_loss("focal_dice", np.ones(5, np.float32), 2.0)
    for temperature in (1.0, 2.0):
        teacher = tf.nn.softmax(logits / temperature).numpy()
        y = np.concatenate([masks[..., None], teacher], axis=-1)
        loss = make_distill_loss(hard, 1.0, temperature)
        assert float(loss(y, logits)) == pytest.approx(float(hard(masks, logits)), abs=1e-5)
    # a confident teacher that disagrees costs more, on unlabeled pixels too
    unlabeled = np.zeros_like(masks)
    other = np.eye(4, dtype=np.float32)[(logits.argmax(-1) + 1) % 4]
    y = np.concatenate([unlabeled[..., None], other], axis=-1)
    assert float(make_distill_loss(hard, 1.0, 1.0)(y, logits)) > float(hard(unlabeled, logits)) + 0.5


def test_class_weighted_distillation_scales_each_pixel_by_the_teachers_class():
    # derived values are indexed by class id 0..4; outputs are classes 1..4
    weights = soft_class_weights([0.0, 1.0, 1.0, 1.0, 4.0], [0.4, 0.3, 0.2, 0.08, 0.02], [1, 2, 3, 4])
    np.testing.assert_allclose(weights, np.array([1, 1, 1, 4]) / (0.58 + 0.08) * 0.6, rtol=1e-6)
    np.testing.assert_allclose(soft_class_weights([0, 1, 1, 1, 1], [0.4, 0.3, 0.2, 0.08, 0.02], [1, 2, 3, 4]), 1.0)

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 2, 2, 4)).astype(np.float32)
    teacher = np.zeros((1, 2, 2, 4), np.float32)
    teacher[..., 0] = 1.0  # soil everywhere ...
    teacher[0, 0, 0] = [0, 0, 0, 1]  # ... but one big-rock pixel
    y = np.concatenate([np.zeros((1, 2, 2, 1), np.float32), teacher], -1)  # no hard labels
    hard = make_loss("focal", np.ones(5, np.float32), 2.0)
    kl = (teacher * (np.log(np.maximum(teacher, 1e-8)) - tf.nn.log_softmax(logits).numpy())).sum(-1)
    pixel = np.where(teacher[..., 3] == 1, 4.0, 1.0)
    loss = make_distill_loss(hard, 1.0, 1.0, np.array([1, 1, 1, 4], np.float32))
    np.testing.assert_allclose(float(loss(y, logits)), (kl * pixel).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(make_distill_loss(hard, 1.0, 1.0)(y, logits)), kl.mean(), rtol=1e-5)


def test_ensemble_probabilities_average_models_and_mirrored_views():
    inputs = tf_env.keras.Input((4, 8, 1))
    # every class gets the same logit (the pixel value), so any averaging must give uniform probabilities
    model = tf_env.keras.Model(
        inputs, tf_env.keras.layers.Conv2D(4, 1, use_bias=False, kernel_initializer="ones")(inputs)
    )
    images = np.random.default_rng(2).integers(0, 3, (3, 4, 8)).astype(np.uint8)
    probs = ensemble_probabilities([model, model], images)
    assert probs.shape == (3, 4, 8, 4) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32), 0.25, atol=1e-3)  # equal logits -> uniform


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.exists(), reason="../shared/data not present")
def test_bundled_model_records_the_split_it_was_trained_on_and_teaches_on_it():
    """A fresh checkout has no runs/: the bundled float32 file is the teacher it can use."""
    from marsedge.edge_runtime.metadata import read_metadata
    from marsedge.errors import RunDirError
    from marsedge.train.config import TrainConfig
    from marsedge.train.distill import teacher_targets
    from marsedge.train.rundir import split_fingerprint
    from marsedge.train.trainer import compute_split

    config = TrainConfig.load(ROOT / "configs" / "marsedge_navcam.json").replace(data=str(REAL_DATA))
    tiles, split, derived, data_hash = compute_split(config)
    for name in ("marsedge_tiles_float32.tflite", "marsedge_tiles_int8.tflite"):
        metadata = read_metadata((BUNDLED / name).read_bytes())
        assert metadata["source_split"] == split_fingerprint(split, data_hash), name
        # the normalisation it carries is this split's training set's
        assert metadata["input"]["normalization"]["mean"] == pytest.approx(derived["mean"], rel=1e-12)
        assert metadata["input"]["normalization"]["std"] == pytest.approx(derived["std"], rel=1e-12)

    teacher = (str(BUNDLED / "marsedge_tiles_float32.tflite"),)
    train = split["train"][:16]
    probs = teacher_targets(teacher, split, data_hash, [1, 2, 3, 4], tiles.images[train], 1.0)
    masks = tiles.masks[train]
    labelled = masks > 0
    assert ((probs.argmax(-1) + 1)[labelled] == masks[labelled]).mean() > 0.85  # it knows its training tiles
    other = compute_split(config.replace(seed=1))
    with pytest.raises(RunDirError, match="split differs"):
        teacher_targets(teacher, other[1], data_hash, [1, 2, 3, 4], tiles.images[train], 1.0)


def test_a_file_teacher_sees_larger_frames_at_its_own_resolution():
    """A 128-px teacher scoring a 256-px run's frames sees each frame as the runtime feeds
    it (area-reduced to 128), not as 64x128 tiles cut from the 256-px frame."""
    from PIL import Image

    from marsedge.edge_runtime import Segmenter
    from marsedge.train.distill import TFLiteTeacher

    model = BUNDLED / "marsedge_tiles_float32.tflite"
    frame = np.asarray(Image.open(ROOT / "tests" / "data" / "golden" / "frame0.png").resize((256, 256)))
    teacher = TFLiteTeacher(model, threads=1)
    logits = teacher.predict(frame[None, :, :, None].astype(np.float32))
    assert logits.shape == (1, 256, 256, len(teacher.metadata["output_classes"]))
    classes = np.asarray(teacher.metadata["output_classes"])[logits[0].argmax(-1)]
    runtime = Segmenter(model, threads=1).segment(frame).mask
    assert (classes == runtime).mean() > 0.95  # bilinear logits against nearest classes differ at edges only

"""Loss, metrics, augmentation and the model builder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marsedge.core.metrics import class_iou, confusion_matrix, mean_iou

tf_env = pytest.importorskip("marsedge.train.tf_env")
tf = tf_env.tf


def test_confusion_matrix_ignores_unlabeled_and_mean_iou_is_hand_computed():
    truth = np.array([[0, 1, 1, 2], [2, 3, 4, 0]])
    pred = np.array([[4, 1, 2, 2], [2, 3, 3, 1]])
    cm = confusion_matrix(truth, pred)
    assert cm.sum() == 6  # two class-0 pixels skipped, whatever was predicted there
    assert cm[1, 1] == 1 and cm[1, 2] == 1 and cm[2, 2] == 2 and cm[3, 3] == 1 and cm[4, 3] == 1
    # soil 1/(1+0+1)=0.5, bedrock 2/(2+1+0)=2/3, sand 1/(1+1+0)=0.5, big rock 0/(0+0+1)=0
    np.testing.assert_allclose(class_iou(cm)[1:], [0.5, 2 / 3, 0.5, 0.0])
    assert math.isclose(mean_iou(cm), (0.5 + 2 / 3 + 0.5 + 0.0) / 4)


def test_mean_iou_skips_classes_absent_everywhere():
    cm = confusion_matrix(np.array([1, 1, 2]), np.array([1, 1, 2]))
    assert mean_iou(cm) == 1.0


def test_keras_metric_matches_numpy_on_whole_epoch():
    from marsedge.train.keras_metrics import MeanIoU

    rng = np.random.default_rng(0)
    metric = MeanIoU()
    truths, preds = [], []
    for _ in range(3):  # accumulated across batches, not batch-averaged
        truth = rng.integers(0, 5, (2, 8, 16))
        logits = rng.normal(size=(2, 8, 16, 4)).astype(np.float32)
        metric.update_state(truth, logits)
        truths.append(truth)
        preds.append(np.argmax(logits, -1) + 1)
    expected = mean_iou(confusion_matrix(np.concatenate(truths), np.concatenate(preds)))
    assert math.isclose(float(metric.result()), expected, rel_tol=1e-6)


def test_focal_loss_matches_hand_computed_value():
    from marsedge.train.losses import focal_loss

    logits = np.zeros((1, 1, 3, 4), np.float32)
    logits[0, 0, 0] = [2.0, 0.0, 0.0, 0.0]  # class 1, confident
    logits[0, 0, 1] = [0.0, 1.0, 0.0, 0.0]  # class 3, wrong-ish
    masks = np.array([[[1, 3, 0]]])  # third pixel unlabeled: ignored
    weights = np.array([0.0, 1.0, 1.0, 2.0, 1.0], np.float32)

    def term(row, cls_index, weight, gamma=2.0):
        p = np.exp(row) / np.exp(row).sum()
        return -weight * (1 - p[cls_index]) ** gamma * np.log(p[cls_index])

    expected = (term(logits[0, 0, 0], 0, 1.0) + term(logits[0, 0, 1], 2, 2.0)) / 2
    value = float(focal_loss(masks, logits, weights, gamma=2.0))
    assert math.isclose(value, expected, rel_tol=1e-5)
    ce = float(focal_loss(masks, logits, weights, gamma=0.0))
    assert ce > value  # focusing down-weights the confident pixel


def test_dice_loss_is_zero_for_perfect_prediction():
    from marsedge.train.losses import dice_loss

    masks = np.array([[[1, 2], [3, 4]]])
    logits = np.eye(4, dtype=np.float32)[masks - 1] * 50.0
    assert float(dice_loss(masks, logits)) < 1e-3


def test_lovasz_loss_equals_mean_jaccard_loss_for_one_hot_predictions():
    from marsedge.train.losses import lovasz_softmax_loss

    rng = np.random.default_rng(0)
    masks = rng.integers(0, 5, size=(2, 6, 8))
    masks[..., 0] = 3  # class 4 (big rock) absent from the labels: not averaged in
    masks[masks == 4] = 1
    predicted = rng.integers(1, 5, size=masks.shape)  # class ids 1..4
    logits = np.eye(4, dtype=np.float32)[predicted - 1] * 60.0
    labelled = masks > 0
    confusion = confusion_matrix(masks[labelled], predicted[labelled])
    ious = [confusion[c, c] / (confusion[c, :].sum() + confusion[:, c].sum() - confusion[c, c]) for c in (1, 2, 3)]
    expected = float(np.mean([1.0 - iou for iou in ious]))
    assert math.isclose(float(lovasz_softmax_loss(masks, logits)), expected, rel_tol=1e-5)


def test_lovasz_loss_is_the_lovasz_extension_of_the_jaccard_loss():
    """Soft probabilities: the loss is the integral over thresholds t of the Jaccard loss of
    the set of pixels whose error is at least t (the Lovasz extension's definition)."""
    import tensorflow as tf

    from marsedge.train.losses import lovasz_softmax_loss

    rng = np.random.default_rng(1)
    masks = rng.integers(0, 5, size=(1, 5, 7))
    logits = rng.normal(size=masks.shape + (4,)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labelled = masks.reshape(-1) > 0
    labels = masks.reshape(-1)[labelled] - 1
    flat = probs.reshape(-1, 4)[labelled]
    per_class = []
    for c in range(4):
        foreground = labels == c
        if not foreground.any():
            continue
        errors = np.abs(foreground - flat[:, c])
        levels = np.concatenate([[0.0], np.sort(errors)])
        integral = 0.0
        for low, high in zip(levels[:-1], levels[1:]):
            wrong = errors >= high
            integral += (high - low) * wrong.sum() / (foreground | wrong).sum()
        per_class.append(integral)
    value = float(lovasz_softmax_loss(masks, logits))
    assert math.isclose(value, float(np.mean(per_class)), rel_tol=1e-5)
    tensor = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = lovasz_softmax_loss(masks, tensor)
    gradient = tape.gradient(loss, tensor).numpy()
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0
    assert not gradient[masks == 0].any()  # unlabeled pixels get no gradient
    assert float(lovasz_softmax_loss(np.zeros_like(masks), logits)) == 0.0  # nothing labelled


@pytest.mark.parametrize("strength", ["strong", "mild"])
def test_augmentation_moves_planted_pattern_with_the_mask(strength):
    from marsedge.train.augment import augment_batch

    images = np.full((16, 64, 128, 1), 60.0, np.float32)
    masks = np.ones((16, 64, 128, 1), np.float32)
    images[:, 10:30, 20:50] = 220.0  # a bright planted block labelled big rock
    masks[:, 10:30, 20:50] = 4
    out_images, out_masks = augment_batch(
        tf.constant(images), tf.constant(masks), tf.constant([3, 7], tf.int64), strength
    )
    out_images, out_masks = out_images.numpy()[..., 0], out_masks.numpy()[..., 0]
    assert set(np.unique(out_masks)) <= {0.0, 1.0, 4.0}  # nearest neighbour, no blended labels
    moved = 0
    for image, mask in zip(out_images, out_masks):
        rock, soil = image[mask == 4], image[mask == 1]
        assert rock.size and soil.size
        assert np.median(rock) > np.median(soil) + 80  # the pattern stays under its label
        moved += not np.array_equal(mask == 4, masks[0, ..., 0] == 4)
        if strength == "mild":  # the camera's view: the block stays near the top, grey levels untouched
            assert np.nonzero(mask == 4)[0].mean() < 24 and np.median(soil) == 60.0
    assert moved >= (8 if strength == "strong" else 4)  # and it really moved in many tiles


def test_flips_keep_the_camera_view_upright():
    from marsedge.train.augment import augment_batch

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, 64, 128, 1)).astype(np.float32)
    masks = rng.integers(0, 5, (32, 64, 128, 1)).astype(np.float32)
    out_images, out_masks = augment_batch(tf.constant(images), tf.constant(masks), tf.constant([1, 2], tf.int64))
    mirrored = 0
    for before, after, mask_before, mask_after in zip(images, out_images.numpy(), masks, out_masks.numpy()):
        same = np.array_equal(after, before) and np.array_equal(mask_after, mask_before)
        flipped = np.array_equal(after, before[:, ::-1]) and np.array_equal(mask_after, mask_before[:, ::-1])
        assert same or flipped  # never up-down, rotated or re-lit: the sky stays at the top
        mirrored += flipped
    assert 4 <= mirrored <= 28


def test_camera_augmentation_changes_grey_levels_only_and_half_the_tiles_each_way():
    from marsedge.train.augment import _gaussian_blur, augment_batch, camera_batch

    rng = np.random.default_rng(0)
    images = rng.uniform(20, 235, (64, 64, 128, 1)).astype(np.float32)
    masks = rng.integers(0, 5, (64, 64, 128, 1)).astype(np.float32)
    seed = tf.constant([4, 2], tf.int64)
    out_images, out_masks = augment_batch(tf.constant(images), tf.constant(masks), seed, "camera")
    flips, _ = augment_batch(tf.constant(images), tf.constant(masks), seed, "flips")
    np.testing.assert_array_equal(out_masks.numpy(), augment_batch(tf.constant(images), tf.constant(masks), seed)[1])
    out = out_images.numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0
    changed = np.abs(out - flips.numpy()).max(axis=(1, 2, 3)) > 0.5
    assert 40 <= changed.sum() < 64  # 1 - 0.5**5 of the tiles change; some stay as they were
    again = camera_batch(tf.constant(images), tf.constant([9, 9], tf.int64)).numpy()
    np.testing.assert_array_equal(again, camera_batch(tf.constant(images), tf.constant([9, 9], tf.int64)).numpy())
    # the blur keeps flat grey flat and a near-zero sigma is the identity
    flat = tf.fill([2, 8, 8, 1], 100.0)
    np.testing.assert_allclose(_gaussian_blur(flat, tf.constant([0.3, 0.7])).numpy(), 100.0, rtol=1e-5)
    np.testing.assert_allclose(
        _gaussian_blur(tf.constant(images[:2]), tf.constant([0.0, 0.0])).numpy(), images[:2], atol=1e-3
    )


def test_augmentation_is_reproducible_and_seed_dependent():
    from marsedge.train.augment import make_dataset
    from marsedge.train.synthetic import generate_tiles

    images, masks = generate_tiles(16, seed=1)
    first = [x.numpy() for x, _ in make_dataset(images, masks, 8, True, seed=1, epoch=0)]
    again = [x.numpy() for x, _ in make_dataset(images, masks, 8, True, seed=1, epoch=0)]
    other = [x.numpy() for x, _ in make_dataset(images, masks, 8, True, seed=1, epoch=1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    for _, y in make_dataset(images, masks, 8, True, seed=1, epoch=0):
        assert y.dtype == tf.int32 and int(tf.reduce_min(y)) >= 0 and int(tf.reduce_max(y)) <= 4


def test_every_layer_is_named_and_model_is_compact():
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet, count_macs

    model = build_unet(ModelConfig(global_context=True, squeeze_excitation=True))
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert not any(name.startswith(("conv2d", "batch_normalization", "re_lu", "add", "multiply")) for name in names)
    assert {"normalize", "bottleneck_sum", "context_pool", "dec0_se_scale", "logits"} <= set(names)
    default = build_unet(ModelConfig())
    assert default.count_params() < 1_000_000
    assert 50e6 < count_macs(default) < 400e6
    assert default.output_shape == (None, 64, 128, 4)


def test_model_rejects_indivisible_tile_size():
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet

    with pytest.raises(ValueError, match="divisible"):
        build_unet(ModelConfig(depth=3), input_shape=(60, 128))


def test_stride_two_stem_runs_at_half_resolution_with_full_resolution_logits():
    from marsedge.errors import MarsEdgeError
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet, count_macs
    from marsedge.train.tf_env import keras

    full = build_unet(ModelConfig(base_filters=8, depth=2, stem_stride=1))
    half = build_unet(ModelConfig(base_filters=8, depth=2, stem_stride=2))
    assert half.output_shape == full.output_shape == (None, 64, 128, 4)
    assert half.get_layer("enc0_1_conv").output_shape == (None, 32, 64, 8)
    assert isinstance(half.get_layer("logits"), keras.layers.Conv2DTranspose)
    # the same layers at a quarter of the pixels: about a quarter of the work
    assert 0.2 < count_macs(half) / count_macs(full) < 0.35
    # no convolution but the stem sees fewer than base_filters input channels
    convs = [l for l in half.layers if isinstance(l, keras.layers.Conv2D) and l.name != "enc0_1_conv"]
    assert min(l.input_shape[-1] for l in convs) >= 8
    with pytest.raises(ValueError, match="stem_stride"):
        build_unet(ModelConfig(depth=3, stem_stride=2), input_shape=(40, 128))  # 40 = 5 * 2**3
    with pytest.raises(MarsEdgeError, match="stem_stride"):
        ModelConfig(stem_stride=4)


def test_refine_head_brings_the_full_resolution_tile_to_the_logits():
    from marsedge.errors import MarsEdgeError
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet, count_macs
    from marsedge.train.tf_env import keras

    plain = build_unet(ModelConfig(base_filters=8, depth=2, stem_stride=2))
    refined = build_unet(ModelConfig(base_filters=8, depth=2, stem_stride=2, refine_filters=8))
    assert refined.output_shape == (None, 64, 128, 4)
    assert isinstance(refined.get_layer("logits"), keras.layers.Conv2D)
    stem = refined.get_layer("refine_stem_conv")
    assert stem.input_shape == (None, 64, 128, 1) and stem.output_shape == (None, 64, 128, 4)
    assert refined.get_layer("refine_conv").output_shape == (None, 64, 128, 8)
    assert count_macs(plain) < count_macs(refined) < 2 * count_macs(plain)
    # a one-pixel change of the tile reaches its own output pixel through the full-resolution path
    tiles = np.zeros((2, 64, 128, 1), np.float32)
    tiles[1, 33, 65] = 255.0
    out = refined(tiles, training=False).numpy()
    assert np.abs(out[1, 33, 65] - out[0, 33, 65]).max() > 0
    for bad in (dict(refine_filters=8, stem_stride=1), dict(refine_filters=-1), dict(refine_filters=1)):
        with pytest.raises(MarsEdgeError, match="refine_filters"):
            ModelConfig(**bad)


def test_max_filters_caps_the_deep_levels_only():
    from marsedge.errors import MarsEdgeError
    from marsedge.train.config import ModelConfig, TrainConfig
    from marsedge.train.model import build_unet

    shape = dict(base_filters=8, depth=3, stem_stride=1, dilation_rates=(1,), bottleneck_filters=24)
    plain, capped = build_unet(ModelConfig(**shape)), build_unet(ModelConfig(**shape, max_filters=16))
    widths = lambda model: [model.get_layer(f"enc{level}_2_conv").filters for level in range(3)]  # noqa: E731
    assert widths(plain) == [8, 16, 32] and widths(capped) == [8, 16, 16]
    assert capped.get_layer("dec2_up").filters == 16 and capped.get_layer("dec0_2_conv").filters == 8
    assert capped.output_shape == plain.output_shape == (None, 64, 128, 4)
    assert capped.count_params() < plain.count_params()
    default_bottleneck = build_unet(ModelConfig(**{**shape, "bottleneck_filters": None}, max_filters=16))
    assert default_bottleneck.get_layer("bottleneck_in_conv").filters == 16  # 8 * 2**3, capped
    assert TrainConfig.from_dict({"model": {"max_filters": 96}}).model.max_filters == 96
    with pytest.raises(MarsEdgeError, match="max_filters"):
        ModelConfig(base_filters=16, max_filters=8)


def test_pool_stem_and_residual_refine_head_are_checked_and_cost_a_light_head():
    from marsedge.errors import MarsEdgeError
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet, count_macs
    from marsedge.train.tf_env import keras

    half = build_unet(ModelConfig(base_filters=8, depth=2, stem_stride=1), input_shape=(32, 64))
    full = build_unet(
        ModelConfig(base_filters=8, depth=2, stem_stride=2, stem_pool=True, refine_filters=8, refine_residual=True),
        input_shape=(64, 128),
    )
    assert full.output_shape == (None, 64, 128, 4)
    assert full.get_layer("enc0_1_conv").strides == (1, 1)  # the pool does the striding
    assert isinstance(full.get_layer("logits_up"), keras.layers.UpSampling2D)
    assert not full.get_layer("refine_logits").get_weights()[0].any()
    assert count_macs(half) < count_macs(full) < 3 * count_macs(half)
    with pytest.raises(MarsEdgeError, match="stem_pool needs stem_stride 2"):
        ModelConfig(stem_stride=1, stem_pool=True)
    with pytest.raises(MarsEdgeError, match="refine_residual"):
        ModelConfig(stem_stride=2, refine_residual=True)

"""Losses on integer masks with unlabeled pixels ignored.

Masks hold class ids 0..4. With ``ignore_background`` the model has 4 output channels
for classes 1..4 and class-0 pixels contribute nothing; otherwise 5 channels.
"""

from __future__ import annotations

import numpy as np

from marsedge.train.tf_env import tf


def _targets(masks, num_outputs: int):
    """Channel index per pixel and a 0/1 validity weight."""
    masks = tf.cast(masks, tf.int32)
    offset = 5 - num_outputs  # 1 when class 0 is ignored
    valid = tf.cast(masks >= offset, tf.float32)
    index = tf.maximum(masks - offset, 0)
    return index, valid


def focal_loss(masks, logits, class_weights: np.ndarray, gamma: float = 2.0):
    """Mean class-weighted focal loss over labelled pixels.

    ``loss = -w[c] * (1 - p_c)**gamma * log(p_c)`` averaged over pixels whose class is
    scored; ``class_weights`` is indexed by class id (length 5).
    """
    num_outputs = logits.shape[-1]
    index, valid = _targets(masks, num_outputs)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    log_pt = tf.gather(log_probs, index, axis=-1, batch_dims=3)
    pt = tf.exp(log_pt)
    weights = tf.gather(tf.constant(class_weights[5 - num_outputs :], tf.float32), index)
    loss = -weights * tf.pow(1.0 - pt, gamma) * log_pt
    return tf.reduce_sum(loss * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def dice_loss(masks, logits, smooth: float = 1.0):
    """Soft Dice loss averaged over classes, on labelled pixels of the whole batch."""
    num_outputs = logits.shape[-1]
    index, valid = _targets(masks, num_outputs)
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1) * valid[..., None]
    onehot = tf.one_hot(index, num_outputs) * valid[..., None]
    intersection = tf.reduce_sum(probs * onehot, axis=[0, 1, 2])
    total = tf.reduce_sum(probs + onehot, axis=[0, 1, 2])
    return 1.0 - tf.reduce_mean((2.0 * intersection + smooth) / (total + smooth))


def lovasz_softmax_loss(masks, logits):
    """Lovasz-softmax loss (Berman et al., CVPR 2018) on labelled pixels of the whole batch.

    The convex Lovasz extension of the Jaccard loss ``1 - IoU`` of each class, evaluated on
    the per-pixel errors ``|[class == c] - p_c|`` and averaged over the classes present in
    the batch's labels. For one-hot predictions it equals the mean ``1 - IoU`` exactly, so
    it optimises the metric the model is chosen by rather than a pixel-wise surrogate.
    """
    num_outputs = logits.shape[-1]
    index, valid = _targets(masks, num_outputs)
    keep = tf.reshape(valid, [-1]) > 0
    probs = tf.boolean_mask(tf.reshape(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), [-1, num_outputs]), keep)
    labels = tf.boolean_mask(tf.reshape(index, [-1]), keep)
    total, present = tf.constant(0.0), tf.constant(0.0)
    for channel in range(num_outputs):
        foreground = tf.cast(tf.equal(labels, channel), tf.float32)
        errors = tf.abs(foreground - probs[:, channel])
        order = tf.argsort(errors, direction="DESCENDING")
        errors_sorted = tf.gather(errors, order)
        foreground_sorted = tf.gather(foreground, order)
        positives = tf.reduce_sum(foreground_sorted)
        intersection = positives - tf.cumsum(foreground_sorted)
        union = positives + tf.cumsum(1.0 - foreground_sorted)
        jaccard = 1.0 - intersection / tf.maximum(union, 1.0)
        gradient = tf.concat([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)
        is_present = tf.cast(positives > 0, tf.float32)
        total += is_present * tf.tensordot(errors_sorted, tf.stop_gradient(gradient), 1)
        present += is_present
    return total / tf.maximum(present, 1.0)


def make_loss(name: str, class_weights: np.ndarray, gamma: float):
    """Keras-compatible ``loss(masks, logits)`` for a config loss name."""

    def focal(masks, logits):
        return focal_loss(masks, logits, class_weights, gamma)

    def focal_dice(masks, logits):
        return focal_loss(masks, logits, class_weights, gamma) + dice_loss(masks, logits)

    def cross_entropy(masks, logits):
        return focal_loss(masks, logits, class_weights, 0.0)

    def focal_lovasz(masks, logits):
        return focal_loss(masks, logits, class_weights, gamma) + lovasz_softmax_loss(masks, logits)

    losses = {
        "focal": focal,
        "focal_dice": focal_dice,
        "focal_lovasz": focal_lovasz,
        "cross_entropy": cross_entropy,
    }
    if name not in losses:
        raise ValueError(f"loss must be one of {', '.join(losses)}; got {name!r}")
    return losses[name]


def make_consistency_loss(loss, weight: float):
    """``loss(y, logits)`` for batches of pairs: each clean frame followed by its corrupted view.

    The task ``loss`` scores the clean views only; ``weight`` times the KL divergence from
    the clean view's class probabilities to the corrupted view's, averaged over every pixel,
    teaches the corrupted view to predict what the clean one does (the consistency term of
    AugMix, Hendrycks et al., ICLR 2020, with one corrupted view). The clean view's
    probabilities are a fixed target (no gradient): only the task loss moves the clean
    prediction, so robustness is not bought with clean accuracy (a symmetric
    Jensen-Shannon term pulled clean predictions towards uncertain ones: docs/research.md).
    Labels, and a distillation loss's soft targets, come in pairs too.
    """

    def consistent(y_true, logits):
        logits = tf.cast(logits, tf.float32)
        target = tf.stop_gradient(tf.nn.softmax(logits[0::2], axis=-1))
        corrupted = tf.nn.log_softmax(logits[1::2], axis=-1)
        divergence = tf.reduce_sum(target * (tf.math.log(tf.clip_by_value(target, 1e-7, 1.0)) - corrupted), axis=-1)
        return loss(y_true[0::2], logits[0::2]) + weight * tf.reduce_mean(divergence)

    return consistent

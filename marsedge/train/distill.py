"""Knowledge distillation: soft targets from teacher runs, and the loss that uses them.

A teacher is any finished run directory trained on the same data file with the same
train/val/test split (so none of its weights saw this run's validation or test tiles).
Its best weights predict every training tile and its left-right mirror (flip-averaged);
several teachers are averaged into one ensemble. The student then learns from the hard
labels (the run's usual loss, labelled pixels only) plus the teachers' per-pixel class
probabilities on *every* pixel, unlabeled ones included: the 42% of the pixels that carry no
label still carry the teachers' knowledge of terrain.

The targets travel through the input pipeline as extra channels of the mask tensor
(``(B, H, W, 1 + C)``: class id, then C probabilities), so the same flips apply to both.
"""
from __future__ import annotations

import logging

import numpy as np

from marsedge.errors import RunDirError
from marsedge.train import rundir

log = logging.getLogger(__name__)

CHUNK = 512  # tiles per prediction chunk: bounds the float32 logits held at once


def check_same_split(source: rundir.RunInfo, split: dict[str, np.ndarray], data_hash: str) -> None:
    """Refuse a run trained on other data or another split (its weights may have seen val/test tiles).

    Raises:
        RunDirError: naming the run and what differs.
    """
    if source.data_sha256 and source.data_sha256 != data_hash:
        raise RunDirError(
            f"{source.path}: it was trained on other data (sha256 {source.data_sha256[:12]}… vs {data_hash[:12]}…)"
        )
    theirs = rundir.split_indices(source)
    for name in ("train", "val", "test"):
        if not np.array_equal(theirs.get(name, np.empty(0)), split[name]):
            raise RunDirError(
                f"{source.path}: its {name} split differs from this run's (use the same data, seed, limit and "
                f"fractions), so its weights may have seen this run's validation or test tiles"
            )


def ensemble_probabilities(models, images: np.ndarray, temperature: float = 1.0, flips: bool = True) -> np.ndarray:
    """Mean softmax(logits / T) of Keras ``models`` over uint8 tiles ``(N,H,W)``, float16 ``(N,H,W,C)``.

    With ``flips`` every model also sees each tile mirrored left-right (its prediction
    mirrored back), as ``marsedge-run --tta`` does.
    """
    from marsedge.train.tf_env import tf

    views = (False, True) if flips else (False,)
    out = None
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK, :, :, None].astype(np.float32)
        total = None
        for model in models:
            for mirrored in views:
                batch = chunk[:, :, ::-1] if mirrored else chunk
                logits = model.predict(batch, batch_size=64, verbose=0)
                probs = tf.nn.softmax(logits / temperature, axis=-1).numpy()
                probs = probs[:, :, ::-1] if mirrored else probs
                total = probs if total is None else total + probs
        mean = (total / (len(models) * len(views))).astype(np.float16)
        if out is None:
            out = np.empty((len(images), *mean.shape[1:]), np.float16)
        out[start : start + len(mean)] = mean
    return out


def teacher_targets(
    teachers: tuple[str, ...],
    split: dict[str, np.ndarray],
    data_hash: str,
    output_classes: list[int],
    images: np.ndarray,
    temperature: float,
) -> np.ndarray:
    """Soft targets ``(N,H,W,C)`` float16 for ``images`` from the flip-averaged teacher ensemble.

    Raises:
        RunDirError: a teacher is missing, incomplete, trained on other data or another
            split, or predicts other classes.
    """
    models = []
    for path in teachers:
        run = rundir.read_run(path)
        check_same_split(run, split, data_hash)
        if run.output_classes != list(output_classes):
            raise RunDirError(
                f"{run.path}: it predicts classes {run.output_classes}, this run {list(output_classes)}"
            )
        models.append(rundir.load_model(run))
        log.info("teacher %s (val mIoU %s)", run.path, run.metrics().get("val", {}).get("mean_iou", "?"))
    targets = ensemble_probabilities(models, images, temperature)
    log.info("soft targets from %d teacher(s): %s, %.0f MB", len(models), targets.shape, targets.nbytes / 2**20)
    return targets


def soft_class_weights(class_weights, pixel_shares, output_classes) -> np.ndarray:
    """Per-output-channel weights for the distillation term, with mean 1 over labelled pixels.

    ``class_weights`` and ``pixel_shares`` are indexed by class id (the run's derived
    values); the result is indexed like the model's outputs.
    """
    weights = np.asarray(class_weights, np.float64)[list(output_classes)]
    shares = np.asarray(pixel_shares, np.float64)[list(output_classes)]
    mean = float((weights * shares).sum() / max(shares.sum(), 1e-12))
    return (weights / mean if mean > 0 else np.ones_like(weights)).astype(np.float32)


def make_distill_loss(hard_loss, weight: float, temperature: float, class_weights: np.ndarray | None = None):
    """``loss(y, logits)`` for ``y = (B,H,W,1+C)``: hard loss on y[...,0] + weight * T² * KL(teacher ‖ student).

    The KL term is averaged over every pixel (labelled or not) at temperature T. With
    ``class_weights`` (one per output channel) each pixel's KL is scaled by the weight the
    teachers expect there, ``sum_c teacher_c * w_c``.
    """
    from marsedge.train.tf_env import tf

    pixel_weights = None if class_weights is None else tf.constant(np.asarray(class_weights, np.float32))

    def distill(y_true, logits):
        masks = y_true[..., 0]
        teacher = tf.cast(y_true[..., 1:], tf.float32)
        logits = tf.cast(logits, tf.float32)
        student = tf.nn.log_softmax(logits / temperature, axis=-1)
        kl = tf.reduce_sum(teacher * (tf.math.log(tf.maximum(teacher, 1e-8)) - student), axis=-1)
        if pixel_weights is not None:
            kl = kl * tf.reduce_sum(teacher * pixel_weights, axis=-1)
        return hard_loss(masks, logits) + weight * temperature**2 * tf.reduce_mean(kl)

    return distill

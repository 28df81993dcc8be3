"""Knowledge distillation: soft targets from teacher runs, and the loss that uses them.

A teacher is any finished run directory trained on the same data file with the same
train/val/test split (so none of its weights saw this run's validation or test tiles), or
a .tflite file that ``marsedge export`` wrote from such a run (its metadata's
``source_split`` fingerprints the data and split; the bundled float32 model is one), so a
fresh checkout can distil from the shipped model without the runs that made it.
A teacher predicts every training tile and its left-right mirror (flip-averaged);
several teachers are averaged into one ensemble. The student then learns from the hard
labels (the run's usual loss, labelled pixels only) plus the teachers' per-pixel class
probabilities on *every* pixel, unlabeled ones included: the 42% of the pixels that carry no
label still carry the teachers' knowledge of terrain.

The targets travel through the input pipeline as extra channels of the mask tensor
(``(B, H, W, 1 + C)``: class id, then C probabilities), so the same flips apply to both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

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
    recorded = rundir.split_fingerprint(rundir.split_indices(source), source.data_sha256)
    _check_fingerprint(source.path, recorded, split, data_hash)


def check_file_split(path: Path, metadata: dict, split: dict[str, np.ndarray], data_hash: str) -> None:
    """The same for an exported .tflite, by its metadata's ``source_split``; refused when absent.

    Raises:
        RunDirError: naming the file and what differs.
    """
    recorded = metadata.get("source_split")
    if not isinstance(recorded, dict):
        raise RunDirError(
            f"{path}: its metadata records no source_split (exported before marsedge recorded it), so "
            "nothing proves it never saw this run's validation or test tiles; use its run directory"
        )
    _check_fingerprint(path, recorded, split, data_hash)


def _check_fingerprint(source: Path, recorded: dict, split, data_hash) -> None:
    """``split``/``data_hash`` may be lists of alternatives (a frame run's own split, and the
    tile file's it inherits): the teacher passes if it matches one of them."""
    if isinstance(split, list):
        errors = []
        for one_split, one_hash in zip(split, data_hash):
            try:
                return _check_fingerprint(source, recorded, one_split, one_hash)
            except RunDirError as exc:
                errors.append(exc)
        raise errors[-1]
    theirs = str(recorded.get("data_sha256") or "")
    if theirs and theirs != data_hash:  # runs from before data hashing record none
        raise RunDirError(f"{source}: it was trained on other data (sha256 {theirs[:12]}… vs {data_hash[:12]}…)")
    mine = rundir.split_fingerprint(split, data_hash)
    for name in ("train", "val", "test"):
        if recorded.get(name) != mine[name]:
            raise RunDirError(
                f"{source}: its {name} split differs from this run's (use the same data, seed, limit and "
                f"fractions), so its weights may have seen this run's validation or test tiles"
            )


class TFLiteTeacher:
    """An exported .tflite as a teacher, with the Keras ``predict`` of float32 batches ``(N,H,W,1)``.

    Tiles go through the edge runtime's interpreter and input table, as on the rover.

    Raises:
        RunDirError: the file cannot be read or is not a marsedge model (named in the message).
    """

    def __init__(self, path: Path, threads: int | None = None):
        from marsedge.edge_runtime.errors import ModelError
        from marsedge.edge_runtime.metadata import FieldOfView
        from marsedge.edge_runtime.tile_model import TileModel

        try:
            content = path.read_bytes()
        except OSError as exc:
            raise RunDirError(f"{path}: cannot read teacher model ({exc.strerror or exc})") from None
        try:  # without a class list the model must carry its metadata, so it is never None here
            self.model = TileModel(content, threads=threads)
        except ModelError as exc:
            raise RunDirError(f"{path}: {exc}") from None
        self.metadata = self.model.metadata
        self.field_of_view = FieldOfView.from_metadata(self.metadata)

    def predict(self, batch: np.ndarray, **_) -> np.ndarray:
        tiles = np.asarray(batch[..., 0], np.uint8)  # raw grey levels 0..255, as the pipeline feeds them
        height, width = self.model.height, self.model.width
        if tiles.shape[1:] != (height, width):  # whole frames
            scale = self.field_of_view.frame_scale(*tiles.shape[1:])
            if self.field_of_view.model_pixels_per_frame is not None and scale != 1.0:
                return self._predict_at_own_resolution(tiles, scale)
            # at the teacher's own resolution: made of whole tiles (frame k = tiles 2k, 2k+1)
            if tiles.shape[1] % height or tiles.shape[2] % width:
                raise RunDirError(
                    f"teacher tiles are {height}x{width}; cannot cover {tiles.shape[1]}x{tiles.shape[2]} frames"
                )
            rows, cols = tiles.shape[1] // height, tiles.shape[2] // width
            parts = tiles.reshape(len(tiles), rows, height, cols, width).transpose(0, 1, 3, 2, 4)
            logits = self.predict(parts.reshape(-1, height, width, 1))
            logits = logits.reshape(len(tiles), rows, cols, height, width, -1).transpose(0, 1, 3, 2, 4, 5)
            return logits.reshape(len(tiles), rows * height, cols * width, -1)
        return np.stack([self.model.float_logits(tile) for tile in tiles])

    def _predict_at_own_resolution(self, frames: np.ndarray, scale: float) -> np.ndarray:
        """Logits for whole frames the teacher sees at another resolution than the run's.

        Each frame is area-resized to the teacher's ``model_pixels_per_frame`` (as the runtime
        feeds it), and the logits come back to the run's size bilinearly.
        """
        from marsedge.edge_runtime.resample import resize_area, scaled_size
        from marsedge.train.tf_env import tf

        height, width = frames.shape[1:]
        small = scaled_size(height, width, scale)
        reduced = np.stack([resize_area(frame, *small) for frame in frames])
        logits = self.predict(reduced[..., None])
        return tf.image.resize(logits, (height, width), method="bilinear").numpy()


def _checked_teacher(path: Path, split: dict[str, np.ndarray], data_hash: str):
    """(model, output classes, val report) of one teacher, its data and split checked first."""
    if path.suffix == ".tflite":
        teacher = TFLiteTeacher(path, threads=os.cpu_count())
        check_file_split(path, teacher.metadata, split, data_hash)
        metrics = teacher.metadata.get("metrics") or {}
        return teacher, list(teacher.metadata["output_classes"]), metrics.get("export_val") or {}
    run = rundir.read_run(path)
    check_same_split(run, split, data_hash)
    return rundir.load_model(run), run.output_classes, run.metrics().get("val", {})


def ensemble_probabilities(models, images: np.ndarray, temperature: float = 1.0, flips: bool = True) -> np.ndarray:
    """Mean softmax(logits / T) of ``models`` over uint8 tiles ``(N,H,W)``, float16 ``(N,H,W,C)``.

    ``models``: Keras models or :class:`TFLiteTeacher` (anything with ``predict``).

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

    ``teachers``: run directories or exported .tflite files (see the module docstring).

    Raises:
        RunDirError: a teacher is missing, incomplete, trained on other data or another
            split (or, for a file, does not record its split), or predicts other classes.
    """
    models = []
    for path in map(Path, teachers):
        model, classes, val = _checked_teacher(path, split, data_hash)
        if classes != list(output_classes):
            raise RunDirError(f"{path}: it predicts classes {classes}, this run {list(output_classes)}")
        models.append(model)
        log.info("teacher %s (val mIoU %s)", path, val.get("mean_iou", "?"))
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

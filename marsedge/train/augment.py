"""On-the-fly augmentation and the tf.data input pipeline.

Augmentation runs on whole batches (one vectorised op per transform), seeded
statelessly from ``(seed, epoch, batch)`` so a run is reproducible with ``--seed``.
Images are bilinearly resampled; masks use nearest neighbour and fill with class 0
(unlabeled, ignored by loss and metric), so labels stay valid.
"""

from __future__ import annotations

import math

import numpy as np

from marsedge.train.tf_env import tf

MAX_ROTATION_DEG = 15.0
ZOOM_RANGE = (0.9, 1.35)  # >1 zooms in
SHIFT_FRACTION = 0.06
AFFINE_PROBABILITY = 0.6
# Affine settings per augmentation strength ("strong": affine_matrices' defaults above).
# "mild" is what the camera itself could see: closer ground, a small pan; no rotation,
# and no up-down flip or grey-level change either (a cue for sand and soil).
AFFINE = {"mild": dict(max_rotation_deg=0.0, zoom_range=(1.0, 1.2), shift_fraction=0.05, probability=0.5), "strong": {}}


# "camera": what another camera, exposure or image pipeline does to the grey levels and the
# fine texture, which the flips-only models lean on heavily (`marsedge eval --corruptions`): each
# change hits half the tiles, independently.
CAMERA_GAIN = (0.8, 1.25)
CAMERA_GAMMA = (0.8, 1.25)
CAMERA_NOISE_MAX = 3.0  # grey levels, standard deviation
CAMERA_BLUR_MAX = 0.7  # Gaussian sigma in pixels
CAMERA_JPEG_QUALITY = (60, 100)
CAMERA_PROBABILITY = 0.5


def _per_sample(seed, shape, dtype=tf.float32, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=dtype)


def _flip(values, masks, seed, axis):
    batch = tf.shape(values)[0]
    take = _per_sample(seed, [batch]) < 0.5
    cond = tf.reshape(take, [-1, 1, 1, 1])
    return tf.where(cond, tf.reverse(values, [axis]), values), tf.where(cond, tf.reverse(masks, [axis]), masks)


def affine_matrices(
    batch,
    height,
    width,
    seed,
    max_rotation_deg: float = MAX_ROTATION_DEG,
    zoom_range: tuple[float, float] = ZOOM_RANGE,
    shift_fraction: float = SHIFT_FRACTION,
    probability: float = AFFINE_PROBABILITY,
):
    """Random rotation/zoom/shift as ImageProjectiveTransform rows (output -> input coordinates)."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    angle = _per_sample(seeds[0], [batch], minval=-1.0, maxval=1.0) * (max_rotation_deg * math.pi / 180.0)
    scale = tf.exp(_per_sample(seeds[1], [batch], minval=math.log(zoom_range[0]), maxval=math.log(zoom_range[1])))
    tx = _per_sample(seeds[2], [batch], minval=-1.0, maxval=1.0) * shift_fraction * width
    ty = _per_sample(seeds[3], [batch], minval=-1.0, maxval=1.0) * shift_fraction * height
    apply = _per_sample(seeds[4], [batch]) < probability
    angle = tf.where(apply, angle, 0.0)
    scale = tf.where(apply, scale, 1.0)
    tx, ty = tf.where(apply, tx, 0.0), tf.where(apply, ty, 0.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a2 = cx - cos * cx + sin * cy + tx
    b2 = cy - sin * cx - cos * cy + ty
    zeros = tf.zeros_like(cos)
    return tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)


def _transform(values, matrices, interpolation, fill_mode):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=values,
        transforms=matrices,
        output_shape=tf.shape(values)[1:3],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode=fill_mode,
    )


def _gaussian_blur(images, sigma):
    """Blur each image with its own Gaussian ``sigma`` (B,), 5x5 taps, reflect padding."""
    taps = tf.constant([-2.0, -1.0, 0.0, 1.0, 2.0])
    sigma = tf.maximum(sigma, 1e-3)[:, None]
    kernel = tf.exp(-0.5 * (taps[None, :] / sigma) ** 2)
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # (B, 5)
    padded = tf.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows = sum(kernel[:, i, None, None, None] * padded[:, i : i + height, :, :] for i in range(5))
    return sum(kernel[:, i, None, None, None] * rows[:, :, i : i + width, :] for i in range(5))


def _jpeg(images, seed):
    """Round-trip each image through JPEG at a random quality in CAMERA_JPEG_QUALITY."""
    seeds = tf.random.experimental.stateless_split(seed, tf.shape(images)[0])

    def one(args):
        image, image_seed = args
        low, high = CAMERA_JPEG_QUALITY
        return 255.0 * tf.image.stateless_random_jpeg_quality(image / 255.0, low, high, image_seed)

    return tf.map_fn(one, (images, seeds), fn_output_signature=tf.float32)


def camera_batch(images, seed):
    """Gain, gamma, blur, JPEG and sensor noise, each on half the tiles of a 0..255 batch."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 10)

    def pick(i):
        return tf.reshape(_per_sample(seeds[i], [batch]) < CAMERA_PROBABILITY, [-1, 1, 1, 1])

    def draw(i, low, high):
        return _per_sample(seeds[i], [batch, 1, 1, 1], minval=math.log(low), maxval=math.log(high))

    images = tf.where(pick(0), images * tf.exp(draw(1, *CAMERA_GAIN)), images)
    images = tf.clip_by_value(images, 0.0, 255.0)
    images = tf.where(pick(2), 255.0 * (images / 255.0) ** tf.exp(draw(3, *CAMERA_GAMMA)), images)
    sigma = _per_sample(seeds[5], [batch], maxval=CAMERA_BLUR_MAX)
    images = tf.where(pick(4), _gaussian_blur(images, sigma), images)
    images = tf.where(pick(6), _jpeg(images, seeds[7]), images)
    stddev = _per_sample(seeds[9], [batch, 1, 1, 1], maxval=CAMERA_NOISE_MAX)
    noise = tf.random.stateless_normal(tf.shape(images), seed=seeds[9] + 1) * stddev
    images = tf.where(pick(8), images + noise, images)
    return tf.clip_by_value(images, 0.0, 255.0)


# "robust": what real cameras and downlinks do to a frame, drawn per frame at the camera's
# resolution (twice the model's, before the 2x reduction). A quarter of the frames stay
# clean; the others get each change with its own probability, so most see one or two.
ROBUST_CLEAN = 0.25
ROBUST_EXPOSURE = 0.5  # gain, gamma and contrast together
ROBUST_GAIN = (0.65, 1.5)
ROBUST_GAMMA = (0.5, 2.0)  # beyond the benchmark's 0.6 .. 1.6
ROBUST_CONTRAST = (0.7, 1.3)
ROBUST_BLUR = 0.35
ROBUST_BLUR_SIGMA = (0.3, 2.5)  # pixels at camera resolution (the benchmark's radius 0.5 .. 2)
ROBUST_RESAMPLE = 0.2
ROBUST_RESAMPLE_FACTOR = (0.4, 1.0)  # down by this, bicubic back up: a frame from a smaller sensor
ROBUST_NOISE = 0.5
ROBUST_NOISE_SIGMA = 10.0  # Gaussian read noise, grey levels (the benchmark's 2 .. 8)
ROBUST_SHOT = 0.6  # signal-dependent: variance up to this many times the grey level
ROBUST_JPEG = 0.35
ROBUST_JPEG_QUALITY = (30, 95)
BLUR_TAPS = 5  # each side: covers 2 sigma of the widest blur


def _gaussian_blur_wide(images, sigma):
    """Blur each image with its own Gaussian ``sigma`` (B,), 2*BLUR_TAPS+1 taps, reflect padding."""
    taps = tf.range(-BLUR_TAPS, BLUR_TAPS + 1, dtype=tf.float32)
    sigma = tf.maximum(sigma, 1e-3)[:, None]
    kernel = tf.exp(-0.5 * (taps[None, :] / sigma) ** 2)
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)
    pad = BLUR_TAPS
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    count = 2 * BLUR_TAPS + 1
    rows = sum(kernel[:, i, None, None, None] * padded[:, i : i + height, :, :] for i in range(count))
    return sum(kernel[:, i, None, None, None] * rows[:, :, i : i + width, :] for i in range(count))


def robust_batch(images, seed):
    """Camera and downlink corruptions of a 0..255 batch ``(B,H,W,1)`` at camera resolution."""
    batch = tf.shape(images)[0]
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    seeds = tf.random.experimental.stateless_split(seed, 16)
    keep_clean = _per_sample(seeds[0], [batch]) < ROBUST_CLEAN

    def pick(i, probability):
        chosen = tf.logical_and(_per_sample(seeds[i], [batch]) < probability, tf.logical_not(keep_clean))
        return tf.reshape(chosen, [-1, 1, 1, 1])

    def log_uniform(i, low, high):
        return tf.exp(_per_sample(seeds[i], [batch, 1, 1, 1], minval=math.log(low), maxval=math.log(high)))

    exposed = images * log_uniform(2, *ROBUST_GAIN)
    exposed = 255.0 * (tf.clip_by_value(exposed, 0.0, 255.0) / 255.0) ** log_uniform(3, *ROBUST_GAMMA)
    mean = tf.reduce_mean(exposed, axis=[1, 2, 3], keepdims=True)
    exposed = tf.clip_by_value((exposed - mean) * log_uniform(4, *ROBUST_CONTRAST) + mean, 0.0, 255.0)
    images = tf.where(pick(1, ROBUST_EXPOSURE), exposed, images)

    sigma = _per_sample(seeds[6], [batch], minval=ROBUST_BLUR_SIGMA[0], maxval=ROBUST_BLUR_SIGMA[1])
    images = tf.where(pick(5, ROBUST_BLUR), _gaussian_blur_wide(images, sigma), images)

    # One resampling factor per batch (a resize takes one output size); which frames get it varies.
    factor = _per_sample(seeds[8], [], minval=ROBUST_RESAMPLE_FACTOR[0], maxval=ROBUST_RESAMPLE_FACTOR[1])
    small = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * factor), tf.int32)
    resampled = tf.image.resize(tf.image.resize(images, small, "area"), [height, width], "bicubic")
    images = tf.where(pick(7, ROBUST_RESAMPLE), tf.clip_by_value(resampled, 0.0, 255.0), images)

    read = _per_sample(seeds[10], [batch, 1, 1, 1], maxval=ROBUST_NOISE_SIGMA)
    shot = _per_sample(seeds[11], [batch, 1, 1, 1], maxval=ROBUST_SHOT)
    stddev = tf.sqrt(read**2 + shot * images)
    noisy = images + tf.random.stateless_normal(tf.shape(images), seed=seeds[12]) * stddev
    images = tf.where(pick(9, ROBUST_NOISE), tf.clip_by_value(noisy, 0.0, 255.0), images)

    quality_seeds = tf.random.experimental.stateless_split(seeds[14], batch)

    def jpeg_one(args):
        image, image_seed = args
        low, high = ROBUST_JPEG_QUALITY
        return 255.0 * tf.image.stateless_random_jpeg_quality(image / 255.0, low, high, image_seed)

    take_jpeg = pick(13, ROBUST_JPEG)
    jpeg = tf.map_fn(jpeg_one, (images, quality_seeds), fn_output_signature=tf.float32)
    images = tf.where(take_jpeg, jpeg, images)
    return tf.clip_by_value(images, 0.0, 255.0)


def reduce_2x(images):
    """Box-filter 2x reduction (how the shared tiles were made from the frames), rounded to grey levels."""
    return tf.round(tf.nn.avg_pool2d(images, 2, 2, "VALID"))


def interleave(first, second):
    """``(B,...)`` and ``(B,...)`` as ``(2B,...)``: first[0], second[0], first[1], ..."""
    stacked = tf.stack([first, second], axis=1)
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(first)[1:]], axis=0))


def augment_batch(images, masks, seed, strength: str = "flips", paired: bool = False):
    """Augment a batch: images float32 ``(B,H,W,1)`` 0..255, masks float32 ``(B,H,W,1)``.

    With ``paired`` the batch comes back twice as long, each frame as its geometric
    augmentation alone followed by the same with the camera corruptions ("camera",
    "robust") on top (for :func:`marsedge.train.losses.make_consistency_loss`).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    images, masks = _flip(images, masks, seeds[0], axis=2)
    if strength == "strong":
        images, masks = _flip(images, masks, seeds[1], axis=1)  # with the LR flip: 180-degree rotations
    if strength in AFFINE:
        shape = tf.shape(images)
        matrices = affine_matrices(
            shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32), seeds[2], **AFFINE[strength]
        )
        images = _transform(images, matrices, "BILINEAR", "REFLECT")
        masks = _transform(masks, matrices, "NEAREST", "CONSTANT")
    clean = images
    if strength == "camera":
        images = camera_batch(images, seeds[3])
    if strength == "robust":
        images = robust_batch(images, seeds[3])
    if paired:
        return interleave(clean, images), interleave(masks, masks)
    if strength == "strong":
        batch = shape[0]
        contrast = tf.exp(_per_sample(seeds[3], [batch, 1, 1, 1], minval=-0.25, maxval=0.25))
        brightness = _per_sample(seeds[4], [batch, 1, 1, 1], minval=-20.0, maxval=20.0)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * contrast + mean + brightness
        noise = tf.random.stateless_normal(tf.shape(images), seed=seeds[5], stddev=2.0)
        images = tf.clip_by_value(images + noise, 0.0, 255.0)
    return images, masks


def _to_float(images, masks, soft=None):
    labels = tf.cast(masks, tf.float32)[..., None]
    if soft is not None:  # teacher probabilities ride along as extra mask channels
        labels = tf.concat([labels, tf.cast(soft, tf.float32)], axis=-1)
    return tf.cast(images, tf.float32)[..., None], labels


def make_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    batch_size: int,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    augment: str = "flips",
    soft: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    paired: bool = False,
):
    """A batched, prefetched dataset of ``(tile float32 (B,H,W,1), mask int32 (B,H,W))``.

    Training sets are shuffled with a seed derived from ``(seed, epoch)`` and augmented,
    so resuming at epoch ``e`` sees the same data as an uninterrupted run. With ``soft``
    (teacher probabilities ``(N,H,W,C)``, see ``marsedge.train.distill``) the label is
    float32 ``(B,H,W,1+C)``: the class id, then the probabilities, augmented together.

    With ``sources`` (the same frames at twice the resolution, ``(N,2H,2W)``) and the
    "robust" augmentation, frames are flipped and corrupted at that resolution and then
    reduced 2x to the model's, as a camera's frame would be; other augmentations see
    ``images``.

    With ``paired`` (training only) every batch holds ``2 * batch_size`` tiles: each frame
    clean, then corrupted (:func:`augment_batch`).
    """
    camera_resolution = training and sources is not None and augment == "robust"
    if camera_resolution:
        images = sources
    slices = (images, masks) if soft is None else (images, masks, soft)
    dataset = tf.data.Dataset.from_tensor_slices(slices)
    if training:
        dataset = dataset.shuffle(len(images), seed=seed * 100003 + epoch, reshuffle_each_iteration=False)
    dataset = dataset.batch(batch_size, drop_remainder=training and len(images) >= batch_size)
    dataset = dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment != "none":
        dataset = dataset.enumerate().map(
            lambda index, batch: augment_batch(
                batch[0],
                batch[1],
                tf.stack([tf.constant(seed, tf.int64), epoch * 1_000_003 + index]),
                augment,
                paired and training,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if camera_resolution:
        dataset = dataset.map(lambda x, y: (reduce_2x(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if soft is None:
        dataset = dataset.map(lambda x, y: (x, tf.cast(y[..., 0], tf.int32)))
    return dataset.prefetch(tf.data.AUTOTUNE)

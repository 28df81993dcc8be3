"""Seeded procedural Mars terrain: grayscale NavCam-like frames with class masks.

Stands in for the real data set in tests, demos and the edge runtime's checks, so it
imports only numpy and Pillow. Classes follow the real masks: 0 unlabeled
(sky, far field, patches the labelers skipped), 1 soil, 2 bedrock, 3 sand, 4 big rock.

Each class is recognisable from local texture, as in the real images: soil is fine
grain with pebbles, bedrock is flat bright slabs cut by straight joints, sand is smooth
with periodic ripples, big rocks are bright shaded blobs casting a shadow. Mean
intensities overlap, so a model must look at texture rather than brightness.

Frame ``i`` of a seed is drawn from its own generator (``default_rng((seed, i))``),
so results do not depend on how many frames are rendered at once, and
``generate_tiles`` tiles ``2i``/``2i + 1`` are the halves of ``generate_frame``-style
frame ``i``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from marsedge.core.classes import CLASS_NAMES

logger = logging.getLogger(__name__)

UNLABELED, SOIL, BEDROCK, SAND, BIG_ROCK = range(len(CLASS_NAMES))

_MIN_FRAME_SIDE = 8
# Pixels rendered per vectorised batch: small enough that the float32 temporaries
# stay in cache (measured ~1.5x faster than 1 << 19), large enough to amortise numpy
# call overhead.
_BATCH_PIXELS = 1 << 17
# Perspective compresses rows by at most 1 / 0.5**2, so ground depth spans <= 4 H.
_MIN_ROW_SCALE = 0.5
# Texture scales are in pixels at the bottom of the frame (nearest ground), fixed
# whatever the frame size, so a model trained on tiles sees the same textures when it
# is run tile by tile over a larger frame.
_RIPPLE_WAVELENGTH = (6.0, 13.0)
_JOINT_SPACING = (14.0, 40.0)
_ROCK_RADIUS = (6.0, 17.0)
_PEBBLE_DENSITY = 0.006
# Per-class grey level (before per-frame jitter, lighting and exposure) and amplitude
# of the per-pixel grain.
_BASE_LEVEL = {SOIL: 108.0, BEDROCK: 136.0, SAND: 122.0}
_GRAIN = np.array([2.0, 5.0, 2.5, 2.5, 5.0], dtype=np.float32)
# Coarse fields: soil/bedrock/sand region scores, unlabeled patches, joint visibility,
# illumination. Fine fields: region detail x3, mottle, ripple warp, far-field relief,
# joint visibility.
_N_COARSE = 6
_N_FINE = 7


@dataclass
class _FrameDraw:
    """Every random choice for one frame; rendering is then deterministic."""

    rows_v: np.ndarray  # (H,) ground coordinate of each row, pixels at the bottom scale
    rows_s: np.ndarray  # (H,) texture scale of each row (1 at the bottom)
    coarse: np.ndarray  # (_N_COARSE, gh, gw) grid of normal values
    fine: np.ndarray  # (_N_FINE, gh, gw)
    noise: np.ndarray  # (H, W) standard normal, the grain of every texture
    sky_rows: np.ndarray  # (W,) rows above this are sky
    far_rows: np.ndarray  # (W,) rows above this (and below the sky) are far field
    sky_level: float
    far_level: float
    region_bias: np.ndarray  # (3,) for soil, bedrock, sand
    class_offset: np.ndarray  # (3,)
    unlabeled_threshold: float
    ripple: tuple[float, float, float]  # wavelength, cos, sin
    joints: tuple[float, float, float, float, float, float, int]  # L1, c1, s1, L2, c2, s2, salt
    light: tuple[float, float, float]  # unit vector towards the sun (x right, y down, z up)
    rocks: list[tuple[float, ...]]  # cy, cx, radius, a2, p2, a3, p3, brightness
    pebble_index: np.ndarray  # flat indices of pebble top-left pixels
    pebble_value: np.ndarray
    gain: float
    offset: float


def _bspline_matrix(coords: np.ndarray, n: int) -> np.ndarray:
    """Cubic B-spline weights of ``coords`` (grid units) on ``n`` knots: (..., n)."""
    t = np.abs(coords[..., None] - np.arange(n, dtype=np.float32))
    inner = (4.0 - 6.0 * t**2 + 3.0 * t**3) / 6.0
    outer = np.clip(2.0 - t, 0.0, None) ** 3 / 6.0
    return np.where(t < 1.0, inner, outer).astype(np.float32)


def _cell_sizes(height: int, width: int) -> tuple[float, float]:
    # Regions scale with the frame, but are capped so a large frame holds many regions
    # of the size a tile sees, rather than a few enormous ones.
    coarse = float(np.clip(max(height, width) / 4.5, 16.0, 96.0))
    return coarse, coarse / 2.5


def _grid_shape(extent: float, cell: float) -> int:
    return int(math.ceil(extent / cell)) + 4


def _draw_frame(rng: np.random.Generator, height: int, width: int) -> _FrameDraw:
    coarse_cell, fine_cell = _cell_sizes(height, width)
    x = np.arange(width, dtype=np.float32)

    def profile(cells: float, amplitude: float) -> np.ndarray:
        knots = rng.standard_normal(_grid_shape(width, width / cells))
        return amplitude * (_bspline_matrix(1.0 + x * cells / width, knots.size) @ knots)

    has_horizon = rng.random() < 0.55
    if has_horizon:
        sky_rows = height * rng.uniform(0.05, 0.3) + profile(4.0, 0.03 * height)
        far_rows = sky_rows + height * rng.uniform(0.06, 0.2) + profile(6.0, 0.02 * height)
        horizon = float(sky_rows.mean())
    else:
        sky_rows = np.full(width, -1.0, np.float32)
        far_rows = sky_rows
        horizon = -height * rng.uniform(0.3, 2.0)

    # Ground-plane perspective: feature size grows linearly with distance below the
    # horizon; clamped so the far rows do not alias into noise.
    y = np.arange(height, dtype=np.float32)
    rows_s = np.clip((y - horizon) / (height - horizon), _MIN_ROW_SCALE, 1.0).astype(np.float32)
    # Depth along the ground grows as 1/s**2 per row, which keeps straight lines on
    # the ground straight in the image (up to the clamp).
    rows_v = np.cumsum(1.0 / rows_s**2).astype(np.float32)
    # Grid shapes depend only on the frame size, so every frame of a size runs the same
    # matrix products whatever batch it is rendered in.
    extent_v = height / _MIN_ROW_SCALE**2

    coarse = rng.standard_normal(
        (_N_COARSE, _grid_shape(extent_v, coarse_cell), _grid_shape(width, coarse_cell))
    ).astype(np.float32)
    fine = rng.standard_normal((_N_FINE, _grid_shape(extent_v, fine_cell), _grid_shape(width, fine_cell))).astype(
        np.float32
    )
    noise = rng.standard_normal((height, width), dtype=np.float32)

    region_bias = rng.normal([0.0, 0.1, -0.55], [0.4, 0.4, 0.5]).astype(np.float32)
    class_offset = rng.normal(0.0, 8.0, 3).astype(np.float32)
    unlabeled_threshold = rng.uniform(0.2, 1.2) if rng.random() < 0.8 else np.inf

    ripple_angle = rng.uniform(0.0, np.pi)
    ripple = (rng.uniform(*_RIPPLE_WAVELENGTH), math.cos(ripple_angle), math.sin(ripple_angle))
    angle1 = rng.uniform(0.0, np.pi)
    angle2 = angle1 + rng.uniform(np.pi / 4, 3 * np.pi / 4)
    joints = (
        rng.uniform(*_JOINT_SPACING), math.cos(angle1), math.sin(angle1),
        rng.uniform(*_JOINT_SPACING), math.cos(angle2), math.sin(angle2),
        int(rng.integers(1, 1 << 20)),
    )  # fmt: skip
    azimuth = rng.uniform(0.0, 2 * np.pi)
    elevation = rng.uniform(0.35, 0.9)
    light = (
        math.cos(azimuth) * math.cos(elevation),
        math.sin(azimuth) * math.cos(elevation),
        math.sin(elevation),
    )

    rocks: list[tuple[float, ...]] = []
    area_factor = height * width / 128.0**2
    if rng.random() < 0.35:
        top = float(far_rows.max()) if has_horizon else 0.1 * height
        for _ in range(rng.poisson(2.2 * area_factor) + 1):
            cy = rng.uniform(top, height)
            scale = float(np.clip((cy - horizon) / (height - horizon), 0.4, 1.0))
            radius = scale * rng.uniform(*_ROCK_RADIUS)
            rocks.append((
                cy, rng.uniform(0, width), radius,
                rng.uniform(0.0, 0.25), rng.uniform(0, 2 * np.pi),
                rng.uniform(0.0, 0.12), rng.uniform(0, 2 * np.pi),
                rng.normal(0.0, 12.0),
            ))  # fmt: skip

    n_pebbles = rng.poisson(_PEBBLE_DENSITY * (height - 2) * (width - 2))
    py = rng.integers(0, height - 2, n_pebbles)
    px = rng.integers(0, width - 2, n_pebbles)
    bright = rng.random(n_pebbles) < 0.7
    pebble_value = np.where(bright, rng.uniform(25.0, 50.0, n_pebbles), -rng.uniform(20.0, 40.0, n_pebbles)).astype(
        np.float32
    )

    return _FrameDraw(
        rows_v=rows_v,
        rows_s=rows_s,
        coarse=coarse,
        fine=fine,
        noise=noise,
        sky_rows=sky_rows.astype(np.float32),
        far_rows=far_rows.astype(np.float32),
        sky_level=rng.uniform(55.0, 95.0),
        far_level=rng.uniform(85.0, 120.0),
        region_bias=region_bias,
        class_offset=class_offset,
        unlabeled_threshold=unlabeled_threshold,
        ripple=ripple,
        joints=joints,
        light=light,
        rocks=rocks,
        pebble_index=py * width + px,
        pebble_value=pebble_value,
        gain=rng.uniform(0.85, 1.15),
        offset=rng.normal(0.0, 6.0),
    )


def _smooth_fields(draws: list[_FrameDraw], name: str, cell: float, width: int) -> np.ndarray:
    """Evaluate the B-spline grids of every frame: (B, F, H, W) float32."""
    stacked = np.stack([getattr(d, name) for d in draws])
    grid_h, grid_w = stacked.shape[2:]
    rows = np.stack([_bspline_matrix(1.0 + d.rows_v / cell, grid_h) for d in draws])
    cols = _bspline_matrix(1.0 + np.arange(width, dtype=np.float32) / cell, grid_w)
    return (rows[:, None] @ stacked) @ cols.T


def _per_frame(draws: list[_FrameDraw], values: Callable[[_FrameDraw], float]) -> np.ndarray:
    """One value per frame, shaped (B, 1, 1) to broadcast over pixels."""
    return np.array([values(d) for d in draws], np.float32)[:, None, None]


def _render_batch(draws: list[_FrameDraw], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    batch = len(draws)
    coarse_cell, fine_cell = _cell_sizes(height, width)
    coarse = _smooth_fields(draws, "coarse", coarse_cell, width)
    fine = _smooth_fields(draws, "fine", fine_cell, width)
    noise = np.stack([d.noise for d in draws])

    y = np.arange(height, dtype=np.float32)[None, :, None]
    rows_s = np.stack([d.rows_s for d in draws])[:, :, None]
    v = np.stack([d.rows_v for d in draws])[:, :, None]
    u = (np.arange(width, dtype=np.float32)[None, None, :] - width / 2) / rows_s

    # Terrain class everywhere (what the image shows), before sky and labeling.
    scores = coarse[:, :3] + 0.45 * fine[:, :3]
    scores += np.stack([d.region_bias for d in draws])[:, :, None, None]
    s_soil, s_bedrock, s_sand = scores[:, 0], scores[:, 1], scores[:, 2]
    terrain = np.where(
        (s_soil >= s_bedrock) & (s_soil >= s_sand),
        SOIL,
        np.where(s_bedrock >= s_sand, BEDROCK, SAND),
    ).astype(np.uint8)
    is_soil, is_bedrock, is_sand = terrain == SOIL, terrain == BEDROCK, terrain == SAND

    offsets = np.stack([d.class_offset for d in draws])[:, :, None, None]
    image = np.where(is_soil, _BASE_LEVEL[SOIL] + offsets[:, 0], 0.0)
    image += np.where(is_bedrock, _BASE_LEVEL[BEDROCK] + offsets[:, 1], 0.0)
    image += np.where(is_sand, _BASE_LEVEL[SAND] + offsets[:, 2], 0.0)
    mottle = fine[:, 3]
    image += mottle * np.where(is_soil, 7.0, np.where(is_bedrock, 5.0, 3.0))

    # Soil: grain about two pixels across plus pebbles.
    blurred = noise.copy()
    blurred[:, :, 1:] += noise[:, :, :-1]
    blurred[:, 1:, :] += blurred[:, :-1, :].copy()
    soil_grain = 1.4 * noise + 0.9 * blurred  # std ~2.8 in units of _GRAIN
    image += np.where(is_soil, soil_grain, noise) * _GRAIN[terrain]
    pebbles = np.zeros((batch, height * width), np.float32)
    for i, d in enumerate(draws):
        for shift in (0, 1, width, width + 1):
            pebbles[i, d.pebble_index + shift] = d.pebble_value
        shade = d.pebble_index[d.pebble_value > 0] + 2 * width + 1
        pebbles[i, shade] = np.minimum(pebbles[i, shade], -15.0)
    image += np.where(is_soil, pebbles.reshape(batch, height, width), 0.0)

    # Sand: asymmetric ripples, bent by a smooth warp so crests are not ruler-straight.
    wavelength = _per_frame(draws, lambda d: d.ripple[0])
    ripple_cos = _per_frame(draws, lambda d: d.ripple[1])
    ripple_sin = _per_frame(draws, lambda d: d.ripple[2])
    phase = u * ripple_cos + v * ripple_sin
    phase = phase * (2 * np.pi / wavelength) + 2.5 * fine[:, 4]
    ripples = np.sin(phase) + 0.35 * np.sin(2 * phase)
    image += np.where(is_sand, 11.0 * ripples, 0.0)

    # Bedrock: two joint sets cut slabs; each slab gets its own level and a tilt ramp.
    joints = [_per_frame(draws, lambda d, k=k: d.joints[k]) for k in range(7)]
    # Joints wander a little so the slabs are not floor tiles.
    q1 = (u * joints[1] + v * joints[2]) / joints[0] + 0.12 * fine[:, 5]
    q2 = (u * joints[4] + v * joints[5]) / joints[3] + 0.12 * fine[:, 4]
    block1, block2 = np.floor(q1), np.floor(q2)
    frac1 = q1 - block1
    # Integer hash of the slab index (int32 products wrap, which is what mixes bits).
    slab_hash = (block1.astype(np.int32) * 73856093) ^ (block2.astype(np.int32) * 19349663)
    slab_hash ^= joints[6].astype(np.int32)
    slab_hash *= -1640531535
    slab_level = ((slab_hash >> 8) & 0xFFFF).astype(np.float32) / 65535.0 - 0.5
    visibility = np.clip(1.2 * coarse[:, 4] + 1.5 * fine[:, 6] + 0.3, 0.0, 1.0)
    crack1 = np.clip(1.0 - np.abs(q1 - np.round(q1)) * joints[0] / 1.1, 0, 1)
    crack2 = np.clip(1.0 - np.abs(q2 - np.round(q2)) * joints[3] / 1.1, 0, 1)
    cracks = np.maximum(crack1, crack2) * visibility
    bedrock = 26.0 * slab_level + 6.0 * frac1 - 50.0 * cracks
    image += np.where(is_bedrock, bedrock, 0.0)

    # Lighting: nearer ground a little brighter, plus broad illumination patches.
    image *= 0.9 + 0.15 * (rows_s - _MIN_ROW_SCALE) / (1.0 - _MIN_ROW_SCALE)
    image += 5.0 * coarse[:, 5]

    for i, d in enumerate(draws):
        _paint_rocks(image[i], terrain[i], noise[i], d)

    mask = terrain.copy()
    mask[coarse[:, 3] > _per_frame(draws, lambda d: d.unlabeled_threshold)] = UNLABELED

    # Sky and the blurry far field: unlabeled, flat, low contrast.
    sky_rows = np.stack([d.sky_rows for d in draws])[:, None, :]
    far_rows = np.stack([d.far_rows for d in draws])[:, None, :]
    in_sky = y < sky_rows
    in_far = (y < far_rows) & ~in_sky
    sky = _per_frame(draws, lambda d: d.sky_level) + 12.0 * y / height + 2.0 * coarse[:, 5]
    far = _per_frame(draws, lambda d: d.far_level) + 8.0 * fine[:, 5] + 3.0 * coarse[:, 5]
    image = np.where(in_sky, sky, np.where(in_far, far, image))
    image += _GRAIN[UNLABELED] * noise * (in_sky | in_far)
    mask[in_sky | in_far] = UNLABELED

    image = image * _per_frame(draws, lambda d: d.gain) + _per_frame(draws, lambda d: d.offset)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _paint_rocks(image: np.ndarray, terrain: np.ndarray, noise: np.ndarray, draw: _FrameDraw) -> None:
    """Draw big rocks and their shadows in place; marks rock pixels in ``terrain``."""
    height, width = image.shape
    lx, ly, lz = draw.light
    for cy, cx, radius, a2, p2, a3, p3, brightness in draw.rocks:
        reach = radius * 1.4 + radius * 1.2 * (1 - lz) + 2
        y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 1)
        x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx

        def outline(dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # Rocks sit on the ground, so they look flattened vertically.
            ey = dy / 0.7
            angle = np.arctan2(ey, dx)
            edge = radius * (1 + a2 * np.cos(2 * angle + p2) + a3 * np.cos(3 * angle + p3))  # noqa: B023 (called within this iteration)
            return np.hypot(dx, ey) < edge, dx / edge, ey / edge

        inside, nx, ny = outline(dx, dy)
        # The shadow falls away from the sun, longer when the sun is low.
        length = radius * 1.2 * (1 - lz) + 0.3 * radius
        shadow, _, _ = outline((dx + lx * length) / 1.15, dy + ly * length)
        shadow &= ~inside
        patch = image[y0:y1, x0:x1]
        patch[shadow] *= 0.55
        nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
        lambert = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
        rock = 108 + brightness + 90 * lambert + 6 * noise[y0:y1, x0:x1]
        patch[inside] = rock[inside]
        terrain[y0:y1, x0:x1][inside] = BIG_ROCK


def _check_side(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _render_frames(seed: int, first: int, count: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``first .. first + count - 1`` of ``seed``: uint8 (count, H, W) twice."""
    images = np.empty((count, height, width), np.uint8)
    masks = np.empty((count, height, width), np.uint8)
    per_batch = max(1, _BATCH_PIXELS // (height * width))
    for start in range(0, count, per_batch):
        stop = min(count, start + per_batch)
        draws = [_draw_frame(np.random.default_rng((seed, first + i)), height, width) for i in range(start, stop)]
        images[start:stop], masks[start:stop] = _render_batch(draws, height, width)
    return images, masks


def generate_frame(height: int = 256, width: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic NavCam-like frame.

    Args:
        height: Rows, at least 8.
        width: Columns, at least 8.
        seed: Non-negative seed; the same seed and size give the same frame.

    Returns:
        ``(image, mask)``: uint8 grey levels (H, W) and uint8 class ids 0..4 (H, W).

    Raises:
        ValueError: If a size or the seed is out of range.
    """
    _check_side("height", height, _MIN_FRAME_SIDE)
    _check_side("width", width, _MIN_FRAME_SIDE)
    _check_seed(seed)
    images, masks = _render_frames(int(seed), 0, 1, int(height), int(width))
    return images[0], masks[0]


def _tiles(seed: int, first_frame: int, count: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    n_frames = (count + 1) // 2
    images, masks = _render_frames(seed, first_frame, n_frames, 2 * height, width)
    shape = (2 * n_frames, height, width)
    return images.reshape(shape)[:count], masks.reshape(shape)[:count]


def generate_tiles(count: int, height: int = 64, width: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate tiles laid out like the real data set.

    Tiles ``2i`` and ``2i + 1`` are the top and bottom halves of one (2H, W) frame, the
    same frame ``generate_frame(2 * height, width, seed)`` returns for ``i = 0``.

    Args:
        count: Number of tiles, at least 1.
        height: Tile rows, at least 4.
        width: Tile columns, at least 8.
        seed: Non-negative seed; deterministic per seed.

    Returns:
        ``(images, masks)``: uint8 (N, H, W) grey levels and uint8 (N, H, W) class ids.

    Raises:
        ValueError: If the count, a size or the seed is out of range.
    """
    _check_side("count", count, 1)
    _check_side("height", height, _MIN_FRAME_SIDE // 2)
    _check_side("width", width, _MIN_FRAME_SIDE)
    _check_seed(seed)
    return _tiles(int(seed), 0, int(count), int(height), int(width))


def generate_dataset(count: int, seed: int = 0, height: int = 64, width: int = 128) -> dict[str, np.ndarray]:
    """Generate a data set in the AN2DL npz layout.

    The test tiles come from frames after the training frames, so no frame is shared.

    Args:
        count: Number of training tiles, at least 1.
        seed: Non-negative seed.
        height: Tile rows.
        width: Tile columns.

    Returns:
        ``{"training_set": uint8 (N, 2, H, W) with [image, mask] on axis 1,
        "test_set": uint8 (max(1, N // 10), H, W) images}``.

    Raises:
        ValueError: If the count, a size or the seed is out of range.
    """
    images, masks = generate_tiles(count, height, width, seed)
    n_test = max(1, count // 10)
    test_images, _ = _tiles(int(seed), (count + 1) // 2, n_test, int(height), int(width))
    return {"training_set": np.stack([images, masks], axis=1), "test_set": test_images}


def write_dataset(
    path: str | os.PathLike,
    count: int,
    seed: int = 0,
    *,
    height: int = 64,
    width: int = 128,
) -> Path:
    """Write :func:`generate_dataset` to a compressed npz, atomically.

    The file is written next to ``path`` and renamed into place, so a reader never sees
    a half-written file.

    Args:
        path: Destination file; parent folders are created.
        count: Number of training tiles.
        seed: Non-negative seed.
        height: Tile rows.
        width: Tile columns.

    Returns:
        The path written.
    """
    path = Path(path)
    dataset = generate_dataset(count, seed, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez_compressed(handle, **dataset)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    logger.info("wrote %d synthetic tiles (seed %d) to %s", count, seed, path)
    return path


def write_png_frames(directory: str | os.PathLike, count: int, size: int = 256, seed: int = 0) -> list[Path]:
    """Write square synthetic frames as 8-bit grayscale PNGs.

    Args:
        directory: Output folder, created if missing.
        count: Number of frames, at least 1.
        size: Side of each frame in pixels, at least 8.
        seed: Non-negative seed.

    Returns:
        Paths ``synthetic_000.png``, ``synthetic_001.png``, ... in order.
    """
    _check_side("count", count, 1)
    _check_side("size", size, _MIN_FRAME_SIDE)
    _check_seed(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images, _ = _render_frames(int(seed), 0, int(count), int(size), int(size))
    paths = []
    for i, image in enumerate(images):
        path = directory / f"synthetic_{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def write_ai4mars(root: str | Path, count: int, size: int = 256, seed: int = 0, unlabeled: int = 0) -> Path:
    """Write ``count`` synthetic frames in the AI4Mars release layout under ``root``.

    ``msl/ncam/images/edr/<id>.JPG`` (grey, quality 95) and ``msl/ncam/labels/train/<id>.png``
    (AI4Mars coding: 0 soil, 1 bedrock, 2 sand, 3 big rock, 255 unlabeled); ``unlabeled``
    more frames get an image but no label (the release has many). Ids sort in frame order.

    Returns:
        The folder holding ``images`` and ``labels``.
    """
    from PIL import Image

    base = Path(root) / "msl" / "ncam"
    (base / "images" / "edr").mkdir(parents=True, exist_ok=True)
    (base / "labels" / "train").mkdir(parents=True, exist_ok=True)
    images, masks = _render_frames(int(seed), 0, count + unlabeled, size, size)
    for k in range(count + unlabeled):
        frame_id = f"NLA_{400000000 + k:09d}EDR_F0000000NCAM00000M1"
        Image.fromarray(images[k]).save(base / "images" / "edr" / f"{frame_id}.JPG", quality=95)
        if k < count:
            label = np.where(masks[k] == 0, 255, masks[k].astype(np.int16) - 1).astype(np.uint8)
            Image.fromarray(label).save(base / "labels" / "train" / f"{frame_id}.png")
    return base

"""Loading, validating, cleaning and splitting Mars terrain tiles (numpy only)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marsedge.errors import DataError

log = logging.getLogger(__name__)

NUM_CLASSES = 5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class TileSet:
    """Grey images and class masks, both uint8 ``(N, H, W)``."""

    images: np.ndarray
    masks: np.ndarray
    source: str = ""
    names: list[str] = field(default_factory=list)
    # Whole frames at twice the model's resolution ``(N, 2H, 2W)`` (frame datasets only):
    # training corrupts them there, at a camera's resolution, then reduces them 2x.
    sources: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> TileSet:
        names = [self.names[i] for i in index] if self.names else []
        sources = self.sources[index] if self.sources is not None else None
        return TileSet(self.images[index], self.masks[index], self.source, names, sources, self.skipped)


def file_sha256(path: str | Path) -> str:
    """Content hash of a data file or, for a folder, of its sorted file names and bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_tiles(path: str | Path, frame_pixels: int = 128) -> TileSet:
    """Load labelled tiles from an AN2DL ``.npz``, a folder of image/mask PNG pairs, or
    whole frames in the AI4Mars release layout (see :func:`load_ai4mars`, which resizes
    them to ``frame_pixels`` across).

    The ``.npz`` holds ``training_set`` ``(N, 2, H, W)`` = [image, mask]; images may be
    uint8 or float (0..1 or 0..255, as in the original AN2DL file). A folder holds
    ``images/NAME.png`` with ``masks/NAME.png``, or ``NAME.png`` beside ``NAME_mask.png``.

    Raises:
        DataError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if find_ai4mars(path) is not None:
            return load_ai4mars(path, frame_pixels)
        return _load_folder(path)
    return _load_npz(path)


AI4MARS_UNLABELED = 255
AI4MARS_CLASSES = 4  # 0 soil, 1 bedrock, 2 sand, 3 big rock -> marsedge ids 1..4


def find_ai4mars(path: Path) -> Path | None:
    """The folder holding ``images/edr`` and ``labels/train`` at or below ``path``
    (``msl/`` and ``msl/ncam/`` as in the release), or None."""
    for root in (
        path,
        path / "msl",
        path / "msl" / "ncam",
        *sorted(path.glob("*/msl")),
        *sorted(path.glob("*/msl/ncam")),
    ):
        if (root / "images" / "edr").is_dir() and (root / "labels" / "train").is_dir():
            return root
    return None


def _companion(folder: Path, frame_id: str, code: str) -> Path | None:
    """A rover or range mask beside an EDR (``...EDR...`` -> ``...MXY...`` / ``...RNG...``)."""
    if not folder.is_dir() or "EDR" not in frame_id:
        return None
    return _find_mask(folder, frame_id.replace("EDR", code, 1))


def load_ai4mars(path: str | Path, frame_pixels: int = 128) -> TileSet:
    """Whole labelled frames from the AI4Mars release layout.

    ``images/edr/<id>.JPG`` with ``labels/train/<id>.png`` (0 soil, 1 bedrock, 2 sand,
    3 big rock, 255 unlabeled; mapped to marsedge ids 1..4 and 0). Frames without a label
    are skipped and counted. Where ``images/mxy`` (rover) or ``images/rng-30m`` (beyond 30 m)
    masks exist, their pixels become unlabeled. Frames are kept in sorted id order (frame k
    of the shared folder gave tiles 2k and 2k+1 of the shared .npz).

    Every frame is resized, area-averaged (or bicubic when smaller), to ``2 * frame_pixels``
    along its longer side (``sources``, where training corrupts it) and reduced 2x to ``frame_pixels``
    (``images``); labels are resized nearest, then every second pixel is kept (``masks``).
    Frames smaller than ``2 * frame_pixels`` have no camera resolution above the model's:
    they are resized to ``frame_pixels`` directly and ``sources`` is None (training corrupts
    ``images``), rather than inventing pixels by up-sampling.

    Raises:
        DataError: naming the file and what is wrong with it.
    """
    from PIL import Image, UnidentifiedImageError

    root = find_ai4mars(Path(path))
    if root is None:
        raise DataError(f"{path}: no AI4Mars layout (images/edr and labels/train) found")
    image_dir, label_dir = root / "images" / "edr", root / "labels" / "train"
    rover_dir, range_dir = root / "images" / "mxy", root / "images" / "rng-30m"
    images_by_id = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    labels_by_id = {p.stem: p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    ids = sorted(set(images_by_id) & set(labels_by_id))
    skipped = {
        "without_label": len(set(images_by_id) - set(labels_by_id)),
        "label_without_image": len(set(labels_by_id) - set(images_by_id)),
    }
    if not ids:
        raise DataError(f"{root}: no frame in images/edr has a label in labels/train")
    sources, images, masks, shape = [], [], [], None
    for frame_id in ids:
        image_path, label_path = images_by_id[frame_id], labels_by_id[frame_id]
        try:
            with Image.open(image_path) as img:
                image = img.convert("L")
            with Image.open(label_path) as img:
                if img.mode not in ("L", "P", "I", "I;16"):
                    raise DataError(f"{label_path}: label must be a single-channel class-id image, got mode {img.mode}")
                label = np.asarray(img).astype(np.int32)
            for folder, code in ((rover_dir, "MXY"), (range_dir, "RNG")):
                extra = _companion(folder, frame_id, code)
                if extra is not None:
                    with Image.open(extra) as img:
                        cover = np.asarray(img.convert("L").resize(label.shape[::-1], Image.NEAREST)) > 0
                    label = np.where(cover, AI4MARS_UNLABELED, label)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{getattr(exc, 'filename', None) or image_path}: not a readable image") from None
        bad = (label != AI4MARS_UNLABELED) & ((label < 0) | (label >= AI4MARS_CLASSES))
        if bad.any():
            raise DataError(f"{label_path}: label values must be 0..3 or 255 (AI4Mars coding), found {label[bad][0]}")
        width, height = image.size  # the longer side spans the field of view, as in the runtime
        longer = max(width, height)
        camera = longer >= 2 * frame_pixels
        factor = 2 if camera else 1
        size = tuple(max(2, factor * round(side * frame_pixels / longer)) for side in (width, height))
        if shape is None:
            shape = size
        elif size != shape:
            raise DataError(
                f"{image_path}: aspect {width}x{height} differs from the first frame's; frames must share one shape"
            )
        if image.size != size:
            image = image.resize(size, Image.BOX if width >= size[0] else Image.BICUBIC)
        label_img = Image.fromarray(np.where(label == AI4MARS_UNLABELED, 0, label + 1).astype(np.uint8))
        if label_img.size != size:
            label_img = label_img.resize(size, Image.NEAREST)
        sources.append(np.asarray(image) if camera else None)
        images.append(np.asarray(image.reduce(factor)))
        masks.append(np.asarray(label_img)[::factor, ::factor])
    log.info("%s: %d labelled frames (%s skipped)", root, len(ids), ", ".join(f"{v} {k}" for k, v in skipped.items()))
    names = [images_by_id[i].name for i in ids]
    frames = np.stack(sources) if sources[0] is not None else None
    return TileSet(np.stack(images), np.stack(masks), str(path), names, frames, skipped)


def _load_npz(path: Path) -> TileSet:
    try:
        archive = np.load(path, allow_pickle=False)
        keys = list(archive.files)
    except Exception as exc:  # numpy raises many types for a bad archive
        raise DataError(f"{path}: not a readable .npz archive ({exc.__class__.__name__})") from None
    try:
        if "training_set" in keys:
            data = archive["training_set"]
            if data.ndim != 4 or data.shape[1] != 2:
                raise DataError(f"{path}: training_set must have shape (N, 2, H, W) = [image, mask], got {data.shape}")
            images, masks = data[:, 0], data[:, 1]
        elif "images" in keys and "masks" in keys:
            images, masks = archive["images"], archive["masks"]
        else:
            raise DataError(
                f"{path}: expected a 'training_set' array (AN2DL layout) or 'images' and 'masks'; "
                f"found {', '.join(keys) or 'nothing'}"
            )
    except ValueError as exc:
        raise DataError(f"{path}: cannot read arrays ({exc})") from None
    return TileSet(_as_images(images, path), _as_masks(masks, path), str(path))


def _as_images(images: np.ndarray, source: Path | str) -> np.ndarray:
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DataError(f"{source}: images must be (N, H, W) grey tiles, got shape {images.shape}")
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise DataError(f"{source}: images contain NaN or infinite values")
        top = float(images.max()) if images.size else 0.0
        if images.min() < 0 or top > 255.0:
            raise DataError(f"{source}: float images must lie in 0..1 or 0..255, got {images.min():g}..{top:g}")
        scale = 255.0 if top <= 1.0 else 1.0
        return np.clip(np.rint(images * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"{source}: integer images must lie in 0..255, got {images.min()}..{images.max()}")
        return images.astype(np.uint8)
    raise DataError(f"{source}: unsupported image dtype {images.dtype}")


def _as_masks(masks: np.ndarray, source: Path | str) -> np.ndarray:
    if masks.ndim != 3:
        raise DataError(f"{source}: masks must be (N, H, W), got shape {masks.shape}")
    if np.issubdtype(masks.dtype, np.floating):
        if not np.isfinite(masks).all() or not np.all(masks == np.round(masks)):
            raise DataError(f"{source}: masks must hold whole class ids 0..4, found fractional values")
    elif not np.issubdtype(masks.dtype, np.integer):
        raise DataError(f"{source}: unsupported mask dtype {masks.dtype}")
    if masks.size and (masks.min() < 0 or masks.max() >= NUM_CLASSES):
        bad = np.unique(masks[(masks < 0) | (masks >= NUM_CLASSES)])[:5]
        raise DataError(f"{source}: mask values must be class ids 0..4, found {', '.join(str(v) for v in bad)}")
    return masks.astype(np.uint8)


def _load_folder(path: Path) -> TileSet:
    from PIL import Image, UnidentifiedImageError

    if (path / "images").is_dir() and (path / "masks").is_dir():
        image_files = sorted(p for p in (path / "images").iterdir() if _is_image_file(p))
        pairs = [(p, _find_mask(path / "masks", p.stem)) for p in image_files]
    else:
        image_files = sorted(p for p in path.iterdir() if _is_image_file(p) and not p.stem.endswith("_mask"))
        pairs = [(p, _find_mask(path, p.stem + "_mask")) for p in image_files]
    if not pairs:
        raise DataError(f"{path}: no image files (expected images/ + masks/ or NAME.png + NAME_mask.png)")
    images, masks, names = [], [], []
    for image_path, mask_path in pairs:
        if mask_path is None:
            raise DataError(f"{image_path}: no matching mask file")
        try:
            image = _read_image(image_path)
            with Image.open(mask_path) as img:
                if img.mode not in ("L", "P", "I", "I;16"):
                    raise DataError(f"{mask_path}: mask must be a single-channel class-id image, got mode {img.mode}")
                mask = np.asarray(img)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{exc.filename or image_path}: not a readable image") from None
        if image.shape != mask.shape:
            raise DataError(f"{mask_path}: mask size {mask.shape[::-1]} differs from image size {image.shape[::-1]}")
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{image_path}: size {image.shape[::-1]} differs from the first tile {images[0].shape[::-1]}"
            )
        images.append(image)
        masks.append(_as_masks(mask[None], mask_path)[0])
        names.append(image_path.name)
    return TileSet(np.stack(images), np.stack(masks), str(path), names)


def _is_image_file(path: Path) -> bool:
    """An image of a labelled folder: a PNG/JPEG/TIFF/BMP, or a PDS product (a label, or an
    ``.IMG`` with its label attached), whose mask is the PNG of the same file stem."""
    from marsedge.edge_runtime.sources.pds import PDS_SUFFIXES, is_product_file

    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or (suffix in PDS_SUFFIXES and path.is_file() and is_product_file(path))


def _read_image(path: Path) -> np.ndarray:
    """An image as uint8 grey; a PDS product through the edge runtime's reader (its sample
    bits honoured, as ``marsedge-run`` reads it).

    Raises:
        DataError: a PDS product that cannot be read (or the [pds] extra is missing).
        OSError: an image file that cannot be read.
    """
    from PIL import Image

    from marsedge.edge_runtime.sources.pds import is_pds_path

    if is_pds_path(path):
        from marsedge.edge_runtime.errors import ImageError
        from marsedge.edge_runtime.sources.pds import read_product

        try:
            return read_product(path).gray()[0]
        except ImageError as exc:
            raise DataError(f"{path}: {exc}") from None
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _find_mask(folder: Path, stem: str) -> Path | None:
    for suffix in (".png", ".tif", ".tiff", ".bmp"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


@dataclass
class CleaningReport:
    """What :func:`clean_tiles` dropped and why (indices into the loaded set)."""

    all_unlabeled: list[int] = field(default_factory=list)
    shared_mask: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    @property
    def dropped(self) -> list[int]:
        return sorted(set(self.all_unlabeled) | set(self.shared_mask) | set(self.duplicates))

    def summary(self) -> dict[str, int]:
        return {
            "all_unlabeled": len(self.all_unlabeled),
            "shared_mask": len(self.shared_mask),
            "duplicates": len(self.duplicates),
            "dropped": len(self.dropped),
        }


def clean_tiles(tiles: TileSet, shared_mask_min: int = 5) -> tuple[np.ndarray, CleaningReport]:
    """Find outlier samples and return the indices to keep.

    Drops masks that are entirely unlabeled (nothing to learn), one multi-class mask
    shared by at least ``shared_mask_min`` different images (a placeholder label, as in
    the seed project's outliers) and exact duplicate image+mask pairs (keeps the first).
    """
    count = len(tiles)
    report = CleaningReport()
    flat_masks = tiles.masks.reshape(count, -1)
    report.all_unlabeled = np.flatnonzero(flat_masks.max(axis=1) == 0).tolist() if count else []

    mask_keys = [hashlib.blake2b(m.tobytes(), digest_size=16).digest() for m in flat_masks]
    pair_keys = [
        hashlib.blake2b(i.tobytes() + m, digest_size=16).digest()
        for i, m in zip(tiles.images.reshape(count, -1), mask_keys)
    ]
    by_mask: dict[bytes, list[int]] = {}
    for index, key in enumerate(mask_keys):
        by_mask.setdefault(key, []).append(index)
    for members in by_mask.values():
        distinct_images = {pair_keys[i] for i in members}
        labelled_classes = np.unique(tiles.masks[members[0]])
        # One class over a common unlabeled far-range band recurs legitimately in uniform
        # scenes; a multi-class mask copied onto many different images is a placeholder.
        if len(distinct_images) >= shared_mask_min and np.count_nonzero(labelled_classes) >= 2:
            report.shared_mask.extend(members)
    seen: set[bytes] = set()
    for index, key in enumerate(pair_keys):
        if key in seen:
            report.duplicates.append(index)
        seen.add(key)
    report.shared_mask.sort()
    dropped = set(report.dropped)
    keep = np.array([i for i in range(count) if i not in dropped], dtype=np.int64)
    return keep, report


def frame_groups(images: np.ndarray) -> np.ndarray:
    """Group ids that keep tiles cut from one frame together.

    The AN2DL file stores each 128x128 frame as two 64x128 tiles, ``2i`` (top) and
    ``2i+1`` (bottom). When the seam rows of those pairs match far better than those of
    unrelated neighbours the tiles are grouped in pairs; otherwise every tile is its own
    group.
    """
    count = len(images)
    ids = np.arange(count)
    if count < 8:
        return ids
    pairs = count // 2
    top = images[0 : 2 * pairs : 2, -1].astype(np.float32)
    bottom = images[1 : 2 * pairs : 2, 0].astype(np.float32)
    seam = np.abs(top - bottom).mean()
    across = np.abs(images[1 : 2 * pairs - 1 : 2, -1].astype(np.float32) - images[2 : 2 * pairs : 2, 0]).mean()
    if seam * 3 < across:
        return ids // 2
    return ids


def stratified_split(
    masks: np.ndarray,
    groups: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Split tile indices into train/val/test by whole groups, stratified by class presence.

    Groups are binned by which of the rare classes (big rock, then sand) they contain, so
    each split gets its share of big-rock tiles. Fixed by ``seed``.
    """
    rng = np.random.default_rng(seed)
    unique_groups, inverse = np.unique(groups, return_inverse=True)
    present = np.zeros((len(unique_groups), NUM_CLASSES), dtype=bool)
    for cls in range(NUM_CLASSES):
        has = (masks == cls).reshape(len(masks), -1).any(axis=1)
        np.logical_or.at(present[:, cls], inverse, has)
    strata = present[:, 4] * 2 + present[:, 3]
    assignment = np.zeros(len(unique_groups), dtype=np.int8)  # 0 train, 1 val, 2 test
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        n_val = int(round(len(members) * val_fraction))
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 3:
            n_val = max(n_val, 1)
            n_test = max(n_test, 1) if test_fraction > 0 else 0
        assignment[members[:n_val]] = 1
        assignment[members[n_val : n_val + n_test]] = 2
    tile_assignment = assignment[inverse]
    return {name: np.flatnonzero(tile_assignment == code) for code, name in enumerate(("train", "val", "test"))}


def class_pixel_shares(masks: np.ndarray) -> np.ndarray:
    """Fraction of pixels of each class 0..4."""
    counts = np.bincount(masks.ravel(), minlength=NUM_CLASSES).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def class_weights(masks: np.ndarray, scheme: str, ignore_background: bool) -> np.ndarray:
    """Loss weights per class from pixel frequencies, normalised to mean 1 over used classes.

    ``inverse`` weighs by 1/frequency, ``inverse_sqrt`` by 1/sqrt(frequency) (gentler,
    usually better IoU), ``none`` gives 1 to all.
    """
    used = np.arange(1 if ignore_background else 0, NUM_CLASSES)
    shares = class_pixel_shares(masks)[used]
    if scheme == "none":
        weights = np.ones(len(used))
    else:
        shares = np.maximum(shares / max(shares.sum(), 1e-12), 1e-4)
        weights = 1.0 / shares if scheme == "inverse" else 1.0 / np.sqrt(shares)
        weights = weights / weights.mean()
    full = np.zeros(NUM_CLASSES, dtype=np.float32)
    full[used] = weights
    return full

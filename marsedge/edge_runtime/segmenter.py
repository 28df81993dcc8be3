"""The public entry point: a :class:`Segmenter` loaded once and reused for every frame."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.core.calibration import TRUSTED_CONFIDENCE, confidence

from .errors import ImageError, ModelError
from .grey import check_bit_depth, frame_to_gray8
from .metadata import ClassInfo, FieldOfView, check_flatbuffer, class_table, read_metadata
from .quality import DegradedRoute, frame_quality
from .resample import nearest_weights, resize_area, resize_nearest, scaled_size
from .tile_model import TileModel
from .tiling import pad_to, ramp, tile_origins

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "marsedge_int8.tflite"
# Models that ship in the package, by the name a user may give instead of a path
# (MODEL_CARD.md): the default, which segments frames that measure blurred or noisy with
# the robust variant (its metadata's degraded_route); that variant alone, which gives up
# clean accuracy for the most robustness to noise and blur; and the tile model both were
# fine-tuned from.
BUNDLED_MODELS = {
    "navcam": DEFAULT_MODEL,
    "navcam-robust": DEFAULT_MODEL.with_name("marsedge_robust_int8.tflite"),
    "navcam-tiles": DEFAULT_MODEL.with_name("marsedge_tiles_int8.tflite"),
}


def model_path(model: str | Path | None) -> Path:
    """The file ``model`` names: a path, a bundled model's name (:data:`BUNDLED_MODELS`; a
    file of that name in the working directory wins), or None for the default."""
    if model is None:
        return DEFAULT_MODEL
    path = Path(model)
    if str(model) in BUNDLED_MODELS and not path.exists():
        return BUNDLED_MODELS[str(model)]
    return path


DEFAULT_TILE_OVERLAP = 16


@dataclass(frozen=True)
class SegmenterOptions:
    """How a :class:`Segmenter` runs; the CLI maps its options onto these one to one.

    Attributes:
        model: path to a marsedge .tflite, or None for the int8 model bundled with the
            package.
        threads: CPU threads for the interpreter; None lets it choose.
        reference_kernels: builtin reference kernels instead of XNNPACK: slower, but
            bit-identical masks on x86_64 and aarch64.
        tile_overlap: pixels shared by neighbouring tiles of a frame larger than the
            model input, 0 .. min(tile height, tile width) - 1.
        tta: also segment the mirrored frame and average the logits (twice the time).
        expect_int8: refuse a model whose input and output tensors are not integer
            (a float32, float16 or dynamic-range model), for pipelines that must run the
            quantised model.
        frame_width: every input is a crop (or tile) of a whole frame this many pixels
            wide: resized by ``model_pixels_per_frame / frame_width``. None: each input is
            a whole frame, resized by ``model_pixels_per_frame / its longer side``.
        scale: resize every input by this many model pixels per input pixel (another
            camera: match the metres per model pixel of the training frames). Not with
            ``frame_width``.
        bit_depth: significant bits of uint16 frames, 8, 10, 12 or 16; ``"auto"`` takes a
            16-bit frame whose maximum is <= 4095 as 12-bit (<= 1023: 10-bit). 8-bit
            frames are read as they are.
        ignore_mask: pixels that are not terrain (the rover's deck, mast, wheels in a fixed
            camera's view): a PNG/JPEG path or an (H, W) array of any size, resized to
            each frame by nearest neighbour; non-zero = not terrain. Those pixels are
            class 0 in the mask and left out of the class shares and the confidence figures.
        min_confidence: pixels whose calibrated confidence is under this (0..1) are class
            0 ("unknown") in the mask and left out of the class shares.
        route_degraded: a model whose metadata names a partner for degraded frames
            (``degraded_route``, as the bundled default does) segments each frame that
            measures blurred or noisy (:mod:`marsedge.edge_runtime.quality`) with that
            partner; False runs the model's own network on every frame.
    """

    model: str | os.PathLike[str] | None = None
    threads: int | None = None
    reference_kernels: bool = False
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    tta: bool = False
    expect_int8: bool = False
    frame_width: float | None = None
    scale: float | None = None
    bit_depth: str | int = "auto"
    ignore_mask: str | os.PathLike[str] | np.ndarray | None = None
    min_confidence: float | None = None
    route_degraded: bool = True


@dataclass(frozen=True)
class Segmentation:
    """The result for one frame.

    Attributes:
        mask: uint8 array (H, W) of class ids, the size of the input frame.
        class_fractions: share of the frame's pixels per class name, every class listed.
        timings: milliseconds per stage: ``preprocess``, ``infer``, ``postprocess``.
        classes: the model's classes (id, name, colour), sorted by id.
        tiles: how many model tiles covered the frame (with TTA each ran twice, mirrored too).
        scale: model pixels per input pixel the frame was resized by.
        confidence: float32 (H, W), each pixel's calibrated confidence in its class (the
            top softmax probability of the logits over the model's temperature); 0 where
            the ignore mask says not terrain. Brought to the frame's size when first read,
            so a caller that never reads it does not pay for it.
        bit_depth: significant bits the frame's pixels were read with.
        mean_confidence: mean confidence over the terrain pixels (not ignored).
        confidence_threshold: ``min_confidence``, else 0.9 (the level the calibration
            report counts as trusted).
        below_threshold: share of the terrain pixels under ``confidence_threshold``.
        ignored_fraction: share of the frame's pixels the ignore mask leaves out.
        quality: the frame's ``noise`` (grey levels) and ``sharpness`` as the model saw
            it (:mod:`marsedge.edge_runtime.quality`); None for a model without a route.
        degraded: the frame measured blurred or noisy, so the route's partner segmented it.

    ``class_fractions`` count the terrain pixels the mask assigns a class: not ignored,
    not under ``min_confidence``; they sum to 1 unless none is left.
    """

    mask: np.ndarray
    class_fractions: dict[str, float]
    timings: dict[str, float]
    classes: tuple[ClassInfo, ...]
    tiles: int
    scale: float = 1.0
    bit_depth: int = 8
    mean_confidence: float = 0.0
    confidence_threshold: float = TRUSTED_CONFIDENCE
    below_threshold: float = 0.0
    ignored_fraction: float = 0.0
    quality: dict[str, float] | None = None
    degraded: bool = False
    # the confidence map as segmented: at model resolution, or the frame's with an ignore mask
    model_confidence: np.ndarray | None = field(default=None, repr=False, compare=False)

    @cached_property
    def confidence(self) -> np.ndarray | None:
        """See the class attributes."""
        if self.model_confidence is None:
            return None
        return np.ascontiguousarray(resize_nearest(self.model_confidence, *self.mask.shape))


class Segmenter:
    """A marsedge model ready to segment frames of any size, loaded once.

    Example:
        >>> segmenter = Segmenter(threads=4)
        >>> result = segmenter.segment(frame)  # uint8 (H, W) grey, or RGB / 16-bit
        >>> result.mask.shape == frame.shape[:2]

    Calls are serialised by a lock: one instance may be shared between threads, though a
    Segmenter per thread runs them in parallel.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        reference_kernels: bool = False,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        tta: bool = False,
        expect_int8: bool = False,
        frame_width: float | None = None,
        scale: float | None = None,
        bit_depth: str | int = "auto",
        ignore_mask: str | os.PathLike[str] | np.ndarray | None = None,
        min_confidence: float | None = None,
        route_degraded: bool = True,
    ) -> None:
        """Loads and checks the model (and the ignore mask).

        Raises:
            ModelError: the model is unreadable, not TFLite, lacks metadata, its tensors
                do not match the model contract, or (with ``expect_int8``) it is not an
                integer model.
            ValueError: ``threads`` or ``tile_overlap`` out of range; ``frame_width`` and
                ``scale`` both given, not a finite positive number, an absurd resize, or
                ``frame_width`` for a model that does not state its field of view;
                ``bit_depth`` not one of auto, 8, 10, 12, 16; ``min_confidence`` outside 0..1.
            ImageError: ``ignore_mask`` cannot be read, or is not a 2-D image.
        """
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be 1 or more, got {threads}")
        bit_depth = check_bit_depth(bit_depth)
        if min_confidence is not None and not (
            isinstance(min_confidence, (int, float))
            and not isinstance(min_confidence, bool)
            and 0 <= min_confidence <= 1
        ):
            raise ValueError(f"min_confidence must be a number in 0..1, got {min_confidence!r}")
        self.options = SegmenterOptions(
            model, threads, reference_kernels, tile_overlap, tta, expect_int8, frame_width, scale,
            bit_depth, ignore_mask, min_confidence, route_degraded,
        )  # fmt: skip
        self._ignore, self.ignore_mask_sha256 = _read_ignore_mask(ignore_mask)
        self._ignore_sized: dict[tuple[int, int], np.ndarray] = {}
        self.model_path = model_path(model)
        try:
            content = self.model_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model: {exc.strerror or exc}") from None
        self.metadata: dict[str, Any] = read_metadata(content)
        if not check_flatbuffer(content):
            logger.debug("%s carries no flatbuffer checksum (exported before marsedge wrote one)", self.model_path)
        self.classes = class_table(self.metadata)
        self.tile_height = int(self.metadata["input"]["height"])
        self.tile_width = int(self.metadata["input"]["width"])
        self.field_of_view = FieldOfView.from_metadata(self.metadata)
        if "scale" in self.metadata["input"]:
            # Only files that carry a fixed input.scale resize frames by a factor that is
            # right for one frame size; legacy files without it run at the input's size.
            logger.warning(
                "%s: old metadata (input.scale %g for every frame, right for one frame size only); "
                "re-stamp it with model_pixels_per_frame (tools/bundle_model.py --restamp) or give a scale",
                self.model_path.name, self.field_of_view.legacy_scale,
            )  # fmt: skip
        # A fixed resize (model pixels per input pixel) for every input, or None: each
        # frame by its own size (FieldOfView.frame_scale).
        self.scale: float | None = self.field_of_view.override_scale(frame_width, scale)
        if not 0 <= tile_overlap < min(self.tile_height, self.tile_width):
            raise ValueError(
                f"tile_overlap must be in 0..{min(self.tile_height, self.tile_width) - 1} "
                f"for {self.tile_height}x{self.tile_width} tiles, got {tile_overlap}"
            )
        self._tiles = TileModel(content, metadata=self.metadata, threads=threads, reference_kernels=reference_kernels)
        tensor_type = self._tiles.tensor_type
        if expect_int8 and not self._tiles.is_integer:
            raise ModelError(
                f"not an int8 model (--expect-int8): its input/output tensors are {tensor_type}, "
                f"metadata precision {self.metadata.get('precision', 'unknown')!r}"
            )
        self.temperature = self._tiles.temperature
        self.route, self._route_tiles, route_path = self._load_route(route_degraded)
        self._weights = (ramp(self.tile_height, tile_overlap)[:, None] * ramp(self.tile_width, tile_overlap)[None, :])[
            ..., None
        ]
        self._lock = threading.Lock()
        self.model_info = {
            "name": self.metadata["name"],
            "model_name": self.metadata.get("model_name") or self.metadata["name"],
            "version": self.metadata.get("marsedge_version"),
            "precision": self.metadata.get("precision"),
            "tensor_type": tensor_type,
            **self.field_of_view.describe(),
            "path": str(self.model_path),
            "sha256": hashlib.sha256(content).hexdigest(),
            "temperature": self.temperature,
            "degraded_route": None if self.route is None else {**self.route.as_dict(), "path": str(route_path)},
        }

    @classmethod
    def from_options(cls, options: SegmenterOptions) -> Segmenter:
        """Builds a Segmenter from saved options."""
        return cls(
            options.model, options.threads, options.reference_kernels, options.tile_overlap, options.tta,
            options.expect_int8, options.frame_width, options.scale, options.bit_depth, options.ignore_mask,
            options.min_confidence, options.route_degraded,
        )  # fmt: skip

    def mask_settings(self) -> dict[str, Any]:
        """Everything that decides the masks this Segmenter writes: the model's SHA-256 and
        the options that change a mask. Two runs with equal settings write the same masks,
        so a frame done under other settings is not done (``marsedge batch``, watch mode)."""
        options = self.options
        # a route, when one runs: its partner and thresholds decide the masks of degraded frames
        route = {} if self.route is None else {"degraded_route": self.route.as_dict()}
        return {
            "model_sha256": self.model_info["sha256"],
            "tile_overlap": options.tile_overlap,
            "tta": options.tta,
            "reference_kernels": options.reference_kernels,
            "frame_width": options.frame_width,
            "scale": options.scale,
            "bit_depth": options.bit_depth,
            "min_confidence": options.min_confidence,
            "ignore_mask_sha256": self.ignore_mask_sha256,
            **route,
        }

    def _load_route(self, enabled: bool) -> tuple[DegradedRoute | None, TileModel | None, Path | None]:
        """The model's partner for degraded frames (metadata ``degraded_route``), loaded
        from beside the model file: (route, its network, its path), or Nones.

        Raises:
            ModelError: the route is malformed, its file is not the one the route names
                (SHA-256), or its network does not take and give what this one does.
        """
        route = DegradedRoute.from_metadata(self.metadata)
        if route is None or not enabled:
            return None, None, None
        path = self.model_path.parent / route.model
        try:
            content = path.read_bytes()
        except OSError:
            logger.warning(
                "%s routes blurred or noisy frames to %s, which is not beside it: every frame runs %s",
                self.model_path.name, route.model, self.model_path.name,
            )  # fmt: skip
            return None, None, None
        if hashlib.sha256(content).hexdigest() != route.sha256:
            raise ModelError(f"{path}: not the file {self.model_path.name} routes degraded frames to (sha256 differs)")
        metadata = read_metadata(content)
        options = self.options
        tiles = TileModel(
            content, metadata=metadata, threads=options.threads, reference_kernels=options.reference_kernels
        )
        same = (
            int(metadata["input"]["height"]) == self.tile_height
            and int(metadata["input"]["width"]) == self.tile_width
            and class_table(metadata) == self.classes
            and tiles.output_classes.tolist() == self._tiles.output_classes.tolist()
            and FieldOfView.from_metadata(metadata) == self.field_of_view
        )
        if not same:
            raise ModelError(f"{path}: its input size, classes or field of view differ from {self.model_path.name}'s")
        if options.expect_int8 and not tiles.is_integer:
            raise ModelError(
                f"not an int8 model (--expect-int8): {path.name}, the route for degraded frames, is {tiles.tensor_type}"
            )
        return route, tiles, path

    def scale_for(self, height: int, width: int) -> float:
        """Model pixels per input pixel for a ``height x width`` input: the override
        (``scale`` or ``frame_width``) if any, else the model's field of view over the
        frame's longer side (:meth:`FieldOfView.frame_scale`)."""
        return self.scale if self.scale is not None else self.field_of_view.frame_scale(height, width)

    def work_pixels(self, height: int, width: int) -> int:
        """Pixels of model input a ``height x width`` frame becomes: resized to the model's
        ground resolution, then padded to at least one tile. Bounds the memory and time a
        frame costs (a 1 x 4,000,000 image is small on disk but 64 tiles tall once padded)."""
        scaled_height, scaled_width = scaled_size(height, width, self.scale_for(height, width))
        return max(scaled_height, self.tile_height) * max(scaled_width, self.tile_width)

    def inputs_per_frame(self, height: int, width: int) -> int:
        """Model inputs (network calls without ``tta``) a ``height x width`` frame takes."""
        scaled_height, scaled_width = scaled_size(height, width, self.scale_for(height, width))
        overlap = self.options.tile_overlap
        rows = tile_origins(max(scaled_height, self.tile_height), self.tile_height, overlap)
        return len(rows) * len(tile_origins(max(scaled_width, self.tile_width), self.tile_width, overlap))

    def segment(self, image: np.ndarray) -> Segmentation:
        """Segments one frame of any size.

        The frame is resized to the model's ground resolution (:meth:`scale_for`: by
        default its longer side becomes the metadata's ``model_pixels_per_frame``); the
        mask is resized back, so it always has the frame's size.

        Args:
            image: (H, W) or (H, W, 1) grey, (H, W, 3|4) RGB(A); uint8 or uint16 (of the
                options' ``bit_depth``).

        Raises:
            ImageError: the array is not an image this model can take, or its pixels
                exceed the bit depth.
        """
        with self._lock:
            return self._segment(image)

    def to_gray8(self, image: np.ndarray, declared_bits: int | None = None) -> tuple[np.ndarray, int]:
        """The frame as the model sees it before resizing: uint8 (H, W) grey, and the bit
        depth its pixels were read with (the options' ``bit_depth``; with ``"auto"``,
        ``declared_bits`` when the frame's source states them, as a PDS label does).

        Raises:
            ImageError: see :meth:`segment`.
        """
        return frame_to_gray8(image, self.options.bit_depth, declared_bits)

    def _ignored(self, height: int, width: int) -> np.ndarray | None:
        """The ignore mask at a frame's size (bool, True = not terrain), or None."""
        if self._ignore is None:
            return None
        sized = self._ignore_sized.get((height, width))
        if sized is None:
            if len(self._ignore_sized) >= 4:
                self._ignore_sized.clear()
            sized = self._ignore_sized[(height, width)] = resize_nearest(self._ignore, height, width)
        return sized

    def _segment(self, image: np.ndarray) -> Segmentation:
        start = time.perf_counter()
        gray, depth = self.to_gray8(image)
        height, width = gray.shape
        scale = self.scale_for(height, width)
        given = gray
        if scale != 1.0:
            gray = resize_area(gray, *scaled_size(height, width, scale))
        network, quality, degraded = self._tiles, None, False
        if self.route is not None:
            quality = frame_quality(given, scale, gray)
            degraded = self.route.degraded(quality)
            if degraded:
                network = self._route_tiles
        class_ids = network.output_classes
        th, tw = self.tile_height, self.tile_width
        quantised = network.lut[pad_to(gray, th, tw)]
        full_height, full_width = quantised.shape
        mask = np.empty((full_height, full_width), dtype=np.uint8)
        certainty = np.empty((full_height, full_width), dtype=np.float32)
        # Tiles are visited in bands of one tile row, keeping the logits of the band; a
        # frame much wider than tall is visited in bands of one tile column instead (the
        # same tiles and sums, transposed), so the band's memory stays small for any shape.
        across = th * full_width > tw * full_height
        frame, out, out_conf = (quantised.T, mask.T, certainty.T) if across else (quantised, mask, certainty)
        bh, bw = (tw, th) if across else (th, tw)
        weights = self._weights.transpose(1, 0, 2) if across else self._weights
        rows = tile_origins(frame.shape[0], bh, self.options.tile_overlap)
        cols = tile_origins(frame.shape[1], bw, self.options.tile_overlap)
        band = np.zeros((bh, frame.shape[1], len(class_ids)), dtype=np.float32)
        band_weight = np.zeros((bh, frame.shape[1]), dtype=np.float32)
        tile_weight = weights[..., 0]
        # the summed logits are weighted (and doubled with TTA): their mean over the model's temperature
        temperature = network.temperature * (2 if self.options.tta else 1)
        band_top = 0
        infer_s = post_s = 0.0
        pre_s = time.perf_counter() - start
        for y in rows:
            tick = time.perf_counter()
            shift = y - band_top
            if shift:
                out[band_top:y] = class_ids[band[:shift].argmax(axis=-1)]
                out_conf[band_top:y] = confidence(band[:shift] / band_weight[:shift, :, None], temperature)
                band[: bh - shift] = band[shift:]
                band[bh - shift :] = 0.0
                band_weight[: bh - shift] = band_weight[shift:]
                band_weight[bh - shift :] = 0.0
                band_top = y
            post_s += time.perf_counter() - tick
            for x in cols:
                tile = frame[y : y + bh, x : x + bw]
                if across:
                    tile = tile.T
                tick = time.perf_counter()
                raw = network.invoke(tile)
                if self.options.tta:
                    flipped = network.invoke(tile[:, ::-1])[:, ::-1]
                mid = time.perf_counter()
                infer_s += mid - tick
                logits = network.dequantise(raw)
                if self.options.tta:
                    logits += network.dequantise(flipped)
                band[:, x : x + bw] += (logits.transpose(1, 0, 2) if across else logits) * weights
                band_weight[:, x : x + bw] += tile_weight
                post_s += time.perf_counter() - mid
        tick = time.perf_counter()
        rest = frame.shape[0] - band_top
        out[band_top:] = class_ids[band[:rest].argmax(axis=-1)]
        out_conf[band_top:] = confidence(band[:rest] / band_weight[:rest, :, None], temperature)
        mask, certainty = mask[: gray.shape[0], : gray.shape[1]], certainty[: gray.shape[0], : gray.shape[1]]
        threshold = self.options.min_confidence
        if threshold is not None:
            mask[certainty < threshold] = 0  # "unknown": too unsure to name a class
        shown_threshold = TRUSTED_CONFIDENCE if threshold is None else threshold
        ignored = self._ignored(height, width)
        if ignored is None:
            # Counted at model resolution, each pixel weighted by the frame pixels it becomes:
            # the frame-size sums, without making the frame-size maps.
            weights = nearest_weights(mask.shape, height, width)
        else:  # the ignore mask is at the frame's size: counted there, its pixels weighing 0
            mask, certainty = resize_nearest(mask, height, width), resize_nearest(certainty, height, width)
            mask[ignored] = 0
            certainty[ignored] = 0.0
            weights = (~ignored).astype(np.float64)
        terrain = float(weights.sum())
        below = float(weights[certainty < shown_threshold].sum())
        mean_confidence = float((weights * certainty).sum()) / terrain if terrain else 0.0
        kept = weights if threshold is None else np.where(certainty >= threshold, weights, 0.0)
        counts, counted = np.bincount(mask.ravel(), weights=kept.ravel(), minlength=256), float(kept.sum())
        mask = np.ascontiguousarray(resize_nearest(mask, height, width))
        fractions = {c.name: float(counts[c.id]) / counted if counted else 0.0 for c in self.classes}
        post_s += time.perf_counter() - tick
        return Segmentation(
            mask=mask,
            class_fractions=fractions,
            timings={"preprocess": pre_s * 1e3, "infer": infer_s * 1e3, "postprocess": post_s * 1e3},
            classes=self.classes,
            tiles=len(rows) * len(cols),  # with TTA each also ran mirrored: the frame's tiles all the same
            scale=scale,
            bit_depth=depth,
            mean_confidence=mean_confidence,
            confidence_threshold=shown_threshold,
            below_threshold=below / terrain if terrain else 0.0,
            ignored_fraction=0.0 if ignored is None else float(np.count_nonzero(ignored)) / ignored.size,
            quality=None if quality is None else quality.as_dict(),
            degraded=degraded,
            model_confidence=certainty,
        )


def _read_ignore_mask(source: str | os.PathLike[str] | np.ndarray | None) -> tuple[np.ndarray | None, str | None]:
    """The ignore mask as a bool (H, W) array (True = not terrain) and the SHA-256 of its
    contents (file bytes, or the array's shape and bits); (None, None) without one.

    Raises:
        ImageError: the file cannot be read as an image, or the array is not 2-D.
    """
    if source is None:
        return None, None
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 3:
            array = array.any(axis=2)
        if array.ndim != 2 or not array.size:
            raise ImageError(f"ignore mask must be a non-empty (H, W) array, got shape {array.shape}")
        ignore = np.ascontiguousarray(array != 0)
        digest = hashlib.sha256(repr(ignore.shape).encode() + np.packbits(ignore).tobytes()).hexdigest()
        return ignore, digest
    from .imageio import load_frame  # Pillow, only when a mask file is given

    try:
        data = Path(source).read_bytes()
    except FileNotFoundError:
        raise ImageError("ignore mask: no such file") from None
    except IsADirectoryError:
        raise ImageError("ignore mask: is a directory") from None
    except OSError as exc:
        raise ImageError(f"ignore mask: cannot read: {exc.strerror or exc}") from None
    try:
        array = load_frame(source, max_pixels=None)
    except ImageError as exc:
        raise ImageError(f"ignore mask: {exc}") from None
    return np.ascontiguousarray(array != 0), hashlib.sha256(data).hexdigest()

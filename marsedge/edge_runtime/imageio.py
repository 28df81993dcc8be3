"""Reading frames as 8-bit grey and writing masks, overlays and records atomically."""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import stat
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from marsedge.core.atomic import write_bytes as write_atomic  # noqa: F401 (the one atomic write)
from marsedge.core.errors import first_line

from .errors import ImageError
from .grey import to_gray8
from .metadata import ClassInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_MAX_PIXELS = 64_000_000
OVERLAY_ALPHA = 0.45
OVERLAY_BAND_ROWS = 128
_FORMATS = ("PNG", "JPEG")

logger = logging.getLogger(__name__)


def load_gray(
    path: str | os.PathLike[str],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    work_pixels: Callable[[int, int], int] | None = None,
) -> np.ndarray:
    """Reads a PNG or JPEG as a uint8 (H, W) grey array, upright per its EXIF orientation.

    Grey, RGB(A), palette and CMYK images are converted the way Pillow converts to "L";
    16-bit grey is scaled from 0..65535 to 0..255; alpha is dropped.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this before decoding them (a
            decompression bomb guard); None or 0 turns the check off (Pillow's own limit
            of about 179 MP still holds).
        work_pixels: ``(height, width) -> pixels`` the model will process for an image of
            that size (e.g. :meth:`.Segmenter.work_pixels`, which counts padding to whole
            tiles); also held to ``max_pixels``, so a 1-pixel-tall strip cannot become a
            huge padded frame.

    Raises:
        ImageError: the file is missing, not a PNG/JPEG, truncated or corrupt, or too large.
    """
    return _read_gray(lambda: _open_regular_file(path), lambda: _head_of_file(path), path, max_pixels, work_pixels)


def decode_gray(
    data: bytes,
    name: str = "<bytes>",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    work_pixels: Callable[[int, int], int] | None = None,
) -> np.ndarray:
    """:func:`load_gray` for a file's contents already in memory (e.g. read from an object
    store by a cluster job); ``name`` only labels log lines. Same conversions and errors.
    """
    return _read_gray(lambda: io.BytesIO(data), lambda: bytes(data[:8]), name, max_pixels, work_pixels)


def load_frame(
    path: str | os.PathLike[str],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    work_pixels: Callable[[int, int], int] | None = None,
) -> np.ndarray:
    """:func:`load_gray` that keeps 16-bit grey as uint16 levels (unscaled), so the bit
    depth can be chosen later (:func:`.grey.frame_to_gray8`); other images as uint8 grey.

    Raises:
        ImageError: as :func:`load_gray`.
    """
    return _read_gray(
        lambda: _open_regular_file(path), lambda: _head_of_file(path), path, max_pixels, work_pixels, _pil_to_frame
    )


def decode_frame(
    data: bytes,
    name: str = "<bytes>",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    work_pixels: Callable[[int, int], int] | None = None,
) -> np.ndarray:
    """:func:`load_frame` for a file's contents already in memory."""
    return _read_gray(lambda: io.BytesIO(data), lambda: bytes(data[:8]), name, max_pixels, work_pixels, _pil_to_frame)


def _read_gray(
    opener: Callable[[], io.IOBase],
    head: Callable[[], bytes],
    name: str | os.PathLike[str],
    max_pixels: int | None,
    work_pixels: Callable[[int, int], int] | None,
    convert: Callable[[Image.Image], np.ndarray] | None = None,
) -> np.ndarray:
    try:
        with warnings.catch_warnings(record=True) as caught:
            # The explicit max_pixels check below replaces Pillow's warning; other warnings
            # (e.g. corrupt EXIF in a readable image) go to the debug log, not stderr.
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with opener() as handle, _size_checked_here(max_pixels), Image.open(handle, formats=_FORMATS) as img:
                width, height = img.size
                check_size(width, height, max_pixels, work_pixels)
                gray = (convert or _pil_to_gray8)(ImageOps.exif_transpose(img))
        for warning in caught:
            logger.debug("%s: %s", name, warning.message)
        return gray
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(_unidentified(head)) from None
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except Image.DecompressionBombError as exc:  # only with max_pixels off: Pillow's own limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels, " if found else ""
        raise ImageError(
            f"refused as a decompression bomb: {size}above the image library's limit of "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels (set a limit with --max-pixels)"
        ) from None
    except MemoryError:
        raise ImageError("not enough memory to decode it") from None
    except Exception as exc:
        # Pillow's decoders report truncated or corrupt data with many types (OSError,
        # SyntaxError, ValueError, EOFError, struct.error...): all mean a corrupt file.
        raise ImageError(f"cannot decode image: {first_line(exc, name_unknown=True)}") from None


_PILLOW_LIMIT = threading.Lock()


@contextmanager
def _size_checked_here(max_pixels: int | None) -> Iterator[None]:
    """With a ``max_pixels`` limit, Pillow's own size limit is off while an image opens, so
    the refusal of a too-large image names ``max_pixels`` (``--max-pixels``), the limit the
    user set, not Pillow's (which would also refuse images ``max_pixels`` allows)."""
    if not max_pixels:
        yield
        return
    with _PILLOW_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open_regular_file(path: str | os.PathLike[str]) -> io.BufferedReader:
    """Opens ``path`` for reading if it is a regular file. A FIFO or device named like an
    image would block the read forever or never end: it is refused without reading."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot open: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError("is a directory")
        if not stat.S_ISREG(mode):
            raise ImageError("not a regular file (a FIFO, device or socket)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _head_of_file(path: str | os.PathLike[str]) -> bytes:
    with suppress(OSError), open(path, "rb") as handle:
        return handle.read(8)
    return b""


def _unidentified(head: Callable[[], bytes]) -> str:
    """Why Pillow did not recognise a file: a PNG or JPEG cut or corrupt in its header, or
    something else altogether (``head`` gives the file's first bytes)."""
    start = head()
    if start.startswith(b"\x89PNG"):
        return "cannot decode image: truncated or corrupt PNG header"
    if start.startswith(b"\xff\xd8\xff"):
        return "cannot decode image: truncated or corrupt JPEG header"
    return "not a PNG or JPEG image"


def check_size(width: int, height: int, max_pixels: int | None, work_pixels: Callable[[int, int], int] | None) -> None:
    """Refuse a frame of more than ``max_pixels`` pixels, or one the model would see as more
    (``work_pixels(height, width)``: resized and padded to whole tiles), before any is decoded.

    Raises:
        ImageError: naming the size and the limit.
    """
    if not max_pixels:
        return
    if width * height > max_pixels:
        raise ImageError(
            f"{width}x{height} image has {width * height} pixels, above the limit of {max_pixels} (--max-pixels)"
        )
    work = work_pixels(height, width) if work_pixels else 0
    if work > max_pixels:
        raise ImageError(
            f"{width}x{height} image becomes {work} pixels of model input (resized and padded to whole "
            f"tiles), above the limit of {max_pixels} (--max-pixels)"
        )


def mask_png(mask: np.ndarray, classes: Sequence[ClassInfo]) -> bytes:
    """Encodes a class-id mask as a palette PNG: pixel values are ids, colours from the model."""
    img = Image.fromarray(mask)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for c in classes:
        palette[c.id] = c.color
    img.putpalette(palette.tobytes())
    return _png_bytes(img)


def overlay_png(
    gray: np.ndarray,
    mask: np.ndarray,
    classes: Sequence[ClassInfo],
    fractions: dict[str, float],
    shown_ids: Sequence[int],
    alpha: float = OVERLAY_ALPHA,
) -> bytes:
    """The frame tinted with class colours, over a legend band listing ``shown_ids``.

    Class 0 (unlabeled) is left untinted so the terrain stays visible.
    """
    weight = np.zeros(256, dtype=np.uint16)
    colors = np.zeros((256, 3), dtype=np.uint16)
    for c in classes:
        colors[c.id] = c.color
        weight[c.id] = 0 if c.id == 0 else round(alpha * 256)
    shown = [c for c in classes if c.id in shown_ids]
    row, pad = 14, 4
    font = _font()
    text_width = max((_text_width(font, f"{c.name} 100.0%") for c in shown), default=0)
    height, width = gray.shape
    pixels = np.zeros((height + pad * 2 + row * len(shown), max(width, pad * 3 + row + text_width), 3), np.uint8)
    # Blend a band of rows at a time: whole-frame uint16 temporaries would cost ~20 MB at 1024x1024.
    for top in range(0, height, OVERLAY_BAND_ROWS):
        band = mask[top : top + OVERLAY_BAND_ROWS]
        w = weight[band][..., None]
        blended = (gray[top : top + OVERLAY_BAND_ROWS, :, None].astype(np.uint16) * (256 - w) + colors[band] * w) >> 8
        pixels[top : top + len(band), :width] = blended
    canvas = Image.fromarray(pixels)
    del pixels
    draw = ImageDraw.Draw(canvas)
    for i, c in enumerate(shown):
        top = gray.shape[0] + pad + i * row
        draw.rectangle((pad, top + 1, pad + row - 3, top + row - 2), fill=c.color)
        draw.text(
            (pad * 2 + row, top), f"{c.name} {100 * fractions.get(c.name, 0.0):.1f}%", fill=(255, 255, 255), font=font
        )
    return _png_bytes(canvas)


def _pil_to_gray8(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I"):
        # 16-bit grey ("I;16*") or 32-bit int: Pillow's "L" conversion would clip, not scale.
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535).astype(np.uint16)
        return to_gray8(wide)
    if img.mode != "L":
        img = img.convert("L")
    return np.array(img, dtype=np.uint8)


def _pil_to_frame(img: Image.Image) -> np.ndarray:
    """uint16 levels for 16-bit (and 32-bit int) grey, uint8 grey for every other mode."""
    if img.mode.startswith("I"):
        return np.clip(np.asarray(img, dtype=np.int64), 0, 65535).astype(np.uint16)
    return _pil_to_gray8(img)


def confidence_png(certainty: np.ndarray) -> bytes:
    """Encodes a confidence map (float 0..1) as an 8-bit grey PNG, 255 = 1.0."""
    levels = np.rint(np.clip(certainty, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return _png_bytes(Image.fromarray(levels))


def _png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except (OSError, ValueError, TypeError):
        return ImageFont.load_default()


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)

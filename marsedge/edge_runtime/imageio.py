"""Reading frames as 8-bit grey and writing masks, overlays and records atomically."""

from __future__ import annotations

import functools
import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .grey import to_gray8
from .metadata import ClassInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_MAX_PIXELS = 64_000_000
OVERLAY_ALPHA = 0.45
_FORMATS = ("PNG", "JPEG")


def load_gray(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads a PNG or JPEG as a uint8 (H, W) grey array, upright per its EXIF orientation.

    Grey, RGB(A), palette and CMYK images are converted the way Pillow converts to "L";
    16-bit grey is scaled from 0..65535 to 0..255; alpha is dropped.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this before decoding them (a
            decompression bomb guard); None or 0 turns the check off (Pillow's own limit
            of about 179 MP still holds).

    Raises:
        ImageError: the file is missing, not a PNG/JPEG, truncated or corrupt, or too large.
    """
    try:
        with warnings.catch_warnings():
            # The explicit max_pixels check below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=_FORMATS) as img:
                width, height = img.size
                if max_pixels and width * height > max_pixels:
                    raise ImageError(
                        f"{width}x{height} image has {width * height} pixels, above the limit of "
                        f"{max_pixels} (--max-pixels)"
                    )
                return _pil_to_gray8(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageError("not a PNG or JPEG image") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow's decoders report truncated or corrupt data with any of these.
        raise ImageError(f"cannot decode image: {_one_line(exc)}") from None


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

    Class 0 (background/unlabeled) is left untinted so the terrain stays visible.
    """
    weight = np.zeros(256, dtype=np.uint16)
    colors = np.zeros((256, 3), dtype=np.uint16)
    for c in classes:
        colors[c.id] = c.color
        weight[c.id] = 0 if c.id == 0 else round(alpha * 256)
    w = weight[mask][..., None]
    rgb = ((gray[..., None].astype(np.uint16) * (256 - w) + colors[mask] * w) >> 8).astype(np.uint8)
    shown = [c for c in classes if c.id in shown_ids]
    row, pad = 14, 4
    font = _font()
    text_width = max((_text_width(font, f"{c.name} 100.0%") for c in shown), default=0)
    width = max(gray.shape[1], pad * 3 + row + text_width)
    canvas = Image.new("RGB", (width, gray.shape[0] + pad * 2 + row * len(shown)), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, c in enumerate(shown):
        top = gray.shape[0] + pad + i * row
        draw.rectangle((pad, top + 1, pad + row - 3, top + row - 2), fill=c.color)
        draw.text((pad * 2 + row, top), f"{c.name} {100 * fractions.get(c.name, 0.0):.1f}%", fill=(255, 255, 255), font=font)
    return _png_bytes(canvas)


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename, so ``path`` only
    ever holds a complete file, even if the process is killed mid-write."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def _pil_to_gray8(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I"):
        # 16-bit grey ("I;16*") or 32-bit int: Pillow's "L" conversion would clip, not scale.
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535).astype(np.uint16)
        return to_gray8(wide)
    if img.mode != "L":
        img = img.convert("L")
    return np.array(img, dtype=np.uint8)


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


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

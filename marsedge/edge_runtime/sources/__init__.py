"""Frames from where users keep them: image files, PDS products and ROS bags.

One interface for ``marsedge-run``, ``--watch``, ``marsedge batch`` and ``marsedge eval``:

- :func:`read_frame` reads a file that is one frame (a PNG/JPEG, or a PDS product) as
  uint8 grey, with the identity its label gives (None for plain images);
- :func:`frame_stem` is the output stem of such a file (a PDS product's id);
- :func:`is_bag` / :func:`.rosbag.read_bag` give the frames of a bag, one per message;
- :func:`is_frame_file` says which files of a folder are frames.

The archive readers (``pdr`` for PDS, the ``[pds]`` extra; ``rosbags``, the ``[ros]``
extra) are imported only when such an input shows up: the edge install needs neither, and
an archive input without its extra fails with one line naming the extra.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from ..imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, decode_gray, load_gray
from .pds import PDS_SUFFIXES, is_pds_path, is_product_file, product_stem, read_product
from .rosbag import BAG_SUFFIXES, is_bag

FRAME_SUFFIXES = IMAGE_SUFFIXES + PDS_SUFFIXES


class MissingReaderError(ImageError):
    """An archive input whose reader library (an extra) is not installed."""

    def __init__(self, extra: str, what: str, module: str) -> None:
        super().__init__(
            f"{what} needs the [{extra}] extra ({module} is not installed): pip install 'marsedge[{extra}]'"
        )
        self.extra = extra


def require(module: str, extra: str, what: str) -> Any:
    """Imports an archive reader, or raises :class:`MissingReaderError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingReaderError(extra, what, module) from None


@dataclass(frozen=True)
class SourceOptions:
    """How archive inputs are read; the CLIs map ``--band`` and ``--topic`` onto these.

    Attributes:
        band: 1-based band of a multi-band PDS product; None: the first.
        topic: the image topic of a bag; None: the bag's only image topic.
    """

    band: int | None = None
    topic: str | None = None


def read_frame(
    path: str | os.PathLike[str],
    data: bytes | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    work_pixels: Callable[[int, int], int] | None = None,
    options: SourceOptions | None = None,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """A file that is one frame as uint8 (H, W) grey, and its identity.

    PNG and JPEG files go through :func:`.imageio.load_gray` (identity None); PDS
    products (``.IMG``, ``.LBL``, ``.xml``) through :func:`.pds.read_product` (identity:
    the label's product id, instrument, sol, spacecraft clock, object, band, bits).
    ``data`` is the file's contents already read (PNG/JPEG only).

    Raises:
        ImageError: the frame cannot be read or used (MissingReaderError: its extra is
            not installed).
    """
    if not is_pds_path(path):
        if data is None:
            return load_gray(path, max_pixels=max_pixels, work_pixels=work_pixels), None
        return decode_gray(data, str(path), max_pixels=max_pixels, work_pixels=work_pixels), None
    if data is not None:
        raise ImageError("PDS products are read from a local path (their labels point to files beside them)")
    product = read_product(path, (options or SourceOptions()).band, max_pixels)
    height, width = product.gray.shape
    if max_pixels:
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
    return product.gray, product.identity


def frame_stem(path: str | os.PathLike[str]) -> str:
    """The output stem of a frame file: a PDS product's id, else the file stem."""
    if is_pds_path(path):
        return product_stem(path)
    return Path(path).stem


def is_frame_file(path: Path) -> bool:
    """Whether a file found in a folder is a frame: a PNG/JPEG, a PDS product (labels, and
    ``.IMG`` files with an attached label), or a bag file (``.mcap``, ``.db3``)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in BAG_SUFFIXES:
        return path.is_file()
    return suffix in PDS_SUFFIXES and path.is_file() and is_product_file(path)


__all__ = [
    "BAG_SUFFIXES",
    "FRAME_SUFFIXES",
    "MissingReaderError",
    "SourceOptions",
    "frame_stem",
    "is_bag",
    "is_frame_file",
    "read_frame",
    "require",
]

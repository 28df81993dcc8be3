"""Frames from where users keep them: image files, PDS products and ROS bags.

One interface for ``marsedge-run``, ``--watch``, ``marsedge batch`` and ``marsedge eval``:

- :func:`read_frame` reads a file that is one frame (a PNG/JPEG, or a PDS product) as
  levels (uint8 grey, or unscaled uint16 levels of a 16-bit frame) with the bits its label
  declares and the identity it gives (None for plain images); the run's bit depth
  (``SegmenterOptions.bit_depth``, ``--bit-depth``) turns the levels into 8-bit grey
  (:meth:`.Segmenter.to_gray8`, :func:`.grey.frame_to_gray8`), the same rule for all;
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
from ..imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, check_size, decode_frame, load_frame
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


@dataclass(frozen=True)
class Frame:
    """A frame file as read, before the bit depth turns it into 8-bit grey.

    Attributes:
        levels: (H, W) uint8 grey, or uint16 levels of a 16-bit frame (unscaled).
        identity: a PDS product's identity (product id, instrument, sol, spacecraft
            clock, object, band, sample bits); None for a PNG/JPEG.
        declared_bits: the significant bits a PDS label declares (None: not declared;
            ``--bit-depth auto`` then decides from the frame's maximum).
    """

    levels: np.ndarray
    identity: dict[str, Any] | None = None
    declared_bits: int | None = None


def read_frame(
    path: str | os.PathLike[str],
    data: bytes | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    work_pixels: Callable[[int, int], int] | None = None,
    options: SourceOptions | None = None,
) -> Frame:
    """A file that is one frame: its levels, identity and declared sample bits.

    PNG and JPEG files go through :func:`.imageio.load_frame` (identity None); PDS
    products (``.IMG``, ``.LBL``, ``.xml``) through :func:`.pds.read_product` (identity:
    the label's product id, instrument, sol, spacecraft clock, object, band, bits).
    ``data`` is the file's contents already read (PNG/JPEG only).

    Raises:
        ImageError: the frame cannot be read or used (MissingReaderError: its extra is
            not installed).
    """
    if not is_pds_path(path):
        if data is None:
            return Frame(load_frame(path, max_pixels=max_pixels, work_pixels=work_pixels))
        return Frame(decode_frame(data, str(path), max_pixels=max_pixels, work_pixels=work_pixels))
    if data is not None:
        raise ImageError("PDS products are read from a local path (their labels point to files beside them)")
    product = read_product(path, (options or SourceOptions()).band, max_pixels)
    height, width = product.levels.shape
    check_size(width, height, max_pixels, work_pixels)
    return Frame(product.levels, product.identity, product.declared_bits)


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
    "Frame",
    "MissingReaderError",
    "SourceOptions",
    "frame_stem",
    "is_bag",
    "is_frame_file",
    "read_frame",
    "require",
]

"""Reading any PNG/JPEG as 8-bit grey, refusing bad files clearly, writing atomically."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import save_png
from PIL import Image

from marsedge.edge_runtime import ImageError
from marsedge.edge_runtime.grey import to_gray8
from marsedge.edge_runtime.imageio import DEFAULT_MAX_PIXELS, load_gray, mask_png, overlay_png, write_atomic
from marsedge.edge_runtime.metadata import ClassInfo

RNG = np.random.default_rng(7)
GREY = RNG.integers(0, 256, (40, 60), dtype=np.uint8)
RGB = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
CLASSES = (
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "soil", (200, 150, 90)),
    ClassInfo(2, "bedrock", (110, 120, 210)),
)


def test_grey_png_is_read_exactly(tmp_path):
    np.testing.assert_array_equal(load_gray(save_png(tmp_path / "g.png", GREY)), GREY)


def test_rgb_file_and_rgb_array_give_the_same_grey(tmp_path):
    from_file = load_gray(save_png(tmp_path / "c.png", RGB))
    np.testing.assert_array_equal(from_file, np.array(Image.fromarray(RGB).convert("L")))
    np.testing.assert_array_equal(to_gray8(RGB), from_file)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    wide = (GREY.astype(np.uint16) * 257).astype(np.uint16)
    wide[0, 0], wide[0, 1] = 65535, 300
    path = tmp_path / "w.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")
    gray = load_gray(path)
    assert gray[0, 0] == 255 and gray[0, 1] == 1
    np.testing.assert_array_equal(gray[1:], GREY[1:])
    np.testing.assert_array_equal(to_gray8(wide), gray)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "1", "CMYK"])
def test_other_modes_match_pillows_grey(tmp_path, mode):
    source = Image.fromarray(RGB).convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    source.save(path)
    expected = np.array(Image.open(path).convert("L"))
    np.testing.assert_array_equal(load_gray(path), expected)


def test_palette_with_transparency(tmp_path):
    image = Image.fromarray(GREY).convert("P")
    image.info["transparency"] = 0
    path = tmp_path / "t.png"
    image.save(path, transparency=0)
    assert load_gray(path).shape == GREY.shape


def test_grey_jpeg(tmp_path):
    path = tmp_path / "g.jpeg"
    Image.fromarray(GREY).save(path, quality=95)
    assert np.abs(load_gray(path).astype(int) - GREY).mean() < 10


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    path = tmp_path / "r.jpg"
    Image.fromarray(GREY).save(path, exif=exif, quality=100)
    gray = load_gray(path)
    assert gray.shape == (60, 40)
    assert np.abs(gray.astype(int) - np.rot90(GREY, -1)).mean() < 10


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: a decompression bomb must be refused from the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("side", "limit"), [(10_000, None), (20_000, None), (100, 5_000)])
def test_too_many_pixels_are_refused(tmp_path, side, limit):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    with pytest.raises(ImageError, match="limit|decompression bomb"):
        load_gray(path) if limit is None else load_gray(path, max_pixels=limit)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a PNG or JPEG"),
        (b"just some text, not an image\n", "not a PNG or JPEG"),
        (os.urandom(2000), "not a PNG or JPEG"),
    ],
)
def test_non_images_are_refused(tmp_path, content, message):
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_gray(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_refused(tmp_path, fmt):
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format=fmt)
    path = tmp_path / "cut.img"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="cannot decode|truncated"):
        load_gray(path)


def test_other_formats_are_refused(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(GREY).save(path, format="BMP")
    with pytest.raises(ImageError, match="not a PNG or JPEG"):
        load_gray(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_gray(tmp_path / "nope.png")


@pytest.mark.parametrize(
    "array",
    [np.zeros((4, 4), np.float32), np.zeros((2, 3, 5), np.uint8), np.zeros((0, 4), np.uint8), np.zeros(7, np.uint8)],
    ids=["float", "5-channels", "empty", "1-d"],
)
def test_arrays_that_are_not_images_are_refused(array):
    with pytest.raises(ImageError):
        to_gray8(array)


def test_mask_png_holds_class_ids_and_palette():
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    image = Image.open(io.BytesIO(mask_png(mask, CLASSES)))
    assert image.mode == "P"
    np.testing.assert_array_equal(np.array(image), mask)
    assert image.getpalette()[3:6] == [200, 150, 90]


def test_overlay_tints_classes_and_adds_a_legend():
    gray = np.full((20, 30), 100, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[:, 15:] = 2
    overlay = np.array(Image.open(io.BytesIO(overlay_png(gray, mask, CLASSES, {"soil": 0.0, "bedrock": 0.5}, [1, 2]))))
    assert overlay.shape[0] > 20 and overlay.shape[1] >= 30  # legend band below
    np.testing.assert_array_equal(overlay[:20, :15], 100)  # class 0 untinted
    assert overlay[0, 20, 2] > overlay[0, 20, 0]  # bedrock tinted blue


def test_atomic_write_leaves_old_content_and_no_temp_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomic(target, b"new content")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    monkeypatch.undo()
    write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert oct(target.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("side", [10_000, 20_000])  # 20,000 x 20,000 is also above Pillow's own limit
def test_a_decompression_bomb_is_refused_by_the_tools_limit(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    with pytest.raises(ImageError) as caught:
        load_gray(path)
    assert str(caught.value) == (
        f"{side}x{side} image has {side * side} pixels, above the limit of {DEFAULT_MAX_PIXELS} (--max-pixels)"
    )


def test_without_the_tools_limit_pillows_refusal_says_how_to_set_one(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20_000, 20_000))
    with pytest.raises(ImageError) as caught:
        load_gray(path, max_pixels=0)
    message = str(caught.value)
    assert message.startswith("refused as a decompression bomb: 400000000 pixels, above the image library's limit")
    assert message.endswith("(set a limit with --max-pixels)") and "DOS attack" not in message

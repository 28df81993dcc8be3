"""Write tests/data/nasty/: a small corpus of hostile and unusual image files, with a manifest.

Run explicitly (numpy and Pillow only; the output is a function of this script):

    python tools/make_nasty_corpus.py            # rewrites tests/data/nasty/

Each file is listed in ``MANIFEST.json`` with what ``marsedge-run --max-pixels 1000000``
must do with it: ``"ok"`` (segmented; ``size`` is the expected ``[width, height]``)
or ``"error"`` (one ``error:`` line containing ``fragment``). Cases that depend on the
file system (FIFOs, symlink loops, newlines in names, read-only or full output
directories) are made at test time by tests/test_reliability_corpus.py instead.
The corpus stays under 200 KB.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "nasty"
MAX_PIXELS = 1_000_000  # the --max-pixels the corpus test runs with
BUDGET_BYTES = 200_000

_rng = np.random.default_rng(20240508)


def terrain(height: int, width: int) -> np.ndarray:
    """A smooth, textured grey frame (cheap stand-in for NavCam terrain)."""
    y, x = np.mgrid[0:height, 0:width]
    base = 110 + 50 * np.sin(x / 9.0) * np.cos(y / 13.0)
    noise = _rng.normal(0, 12, (height, width))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG from already filtered scanlines (each starting with its filter byte)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def cases() -> dict[str, tuple[bytes, dict]]:
    """name -> (file bytes, manifest entry)."""
    frame = terrain(96, 160)
    small = terrain(40, 60)
    rgb = np.stack([small, np.roll(small, 7, axis=1), 255 - small], axis=-1)
    good_png = encode(Image.fromarray(small), "PNG")
    good_jpeg = encode(Image.fromarray(small), "JPEG", quality=90)
    out: dict[str, tuple[bytes, dict]] = {}

    def ok(name: str, data: bytes, size: tuple[int, int], why: str) -> None:
        out[name] = (data, {"expect": "ok", "size": list(size), "why": why})

    def error(name: str, data: bytes, fragment: str, why: str) -> None:
        out[name] = (data, {"expect": "error", "fragment": fragment, "why": why})

    # Unusual but valid images: all must be segmented at their own size.
    ok("one_pixel.png", encode(Image.fromarray(np.full((1, 1), 90, np.uint8)), "PNG"), (1, 1), "1x1 grey")
    ok("one_pixel.jpg", encode(Image.fromarray(np.full((1, 1), 90, np.uint8)), "JPEG"), (1, 1), "1x1 JPEG")
    ok("one_row.png", encode(Image.fromarray(terrain(1, 300)), "PNG"), (300, 1), "a single row, padded")
    ok("one_column.png", encode(Image.fromarray(terrain(300, 1)), "PNG"), (1, 300), "a single column")
    ok("wide_strip.png", encode(Image.fromarray(terrain(20, 1500)), "PNG"), (1500, 20), "much wider than tall")
    ok("grey16.png", encode(Image.fromarray(small.astype(np.uint16) * 257), "PNG"), (60, 40), "16-bit grey")
    rows16 = b"".join(b"\x00" + (row.astype(">u2") * 257).tobytes() for row in rgb)
    ok("rgb16.png", raw_png(60, 40, 16, 2, rows16), (60, 40), "16-bit RGB (handwritten PNG)")
    ok("palette.png", encode(Image.fromarray(rgb).convert("P"), "PNG"), (60, 40), "palette")
    transparent = Image.fromarray(rgb).convert("P")
    ok("palette_transparency.png", encode(transparent, "PNG", transparency=0), (60, 40), "palette with tRNS")
    ok("grey_alpha.png", encode(Image.fromarray(small).convert("LA"), "PNG"), (60, 40), "grey + alpha")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(Image.fromarray(small))
    ok("rgba.png", encode(rgba, "PNG"), (60, 40), "RGB + alpha")
    ok("bilevel.png", encode(Image.fromarray(small).convert("1"), "PNG"), (60, 40), "1-bit")
    ok("cmyk.jpg", encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), (60, 40), "CMYK JPEG")
    ok("progressive.jpg", encode(Image.fromarray(small), "JPEG", progressive=True), (60, 40), "progressive JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    ok("exif_rotated.jpg", encode(Image.fromarray(small), "JPEG", exif=exif), (40, 60), "EXIF orientation 6")
    # Big-endian TIFF header and one IFD: orientation 6, then a tag whose data lies past the end.
    ifd = struct.pack(">HHHIHH", 2, 0x0112, 3, 1, 6, 0) + struct.pack(">HHII", 0x010E, 2, 5000, 0x7FFF) + bytes(4)
    bad_exif = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd
    ok(
        "exif_corrupt.jpg",
        encode(Image.fromarray(small), "JPEG", exif=bad_exif),
        (40, 60),
        "EXIF tag past the end (Pillow warns)",
    )
    frames = [Image.fromarray(small), Image.fromarray(255 - small)]
    ok("animated.png", encode(frames[0], "PNG", save_all=True, append_images=frames[1:]), (60, 40), "APNG")
    ok("jpeg_named.png", good_jpeg, (60, 40), "a JPEG with a .png name (content decides)")
    ok("UPPER CASE.PNG", good_png, (60, 40), "upper-case suffix and a space")
    ok("marsé 火星 frame.png", encode(Image.fromarray(frame), "PNG"), (160, 96), "unicode and spaces in the name")

    # Not images, or broken ones: one clear line each.
    error("random_bytes.png", _rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not a PNG or JPEG", "noise")
    error("random_bytes.jpg", _rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not a PNG or JPEG", "noise")
    error("empty.png", b"", "not a PNG or JPEG", "zero bytes")
    error("text.jpg", b"hello, rover\n", "not a PNG or JPEG", "a text file")
    error(
        "html.png",
        b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>\n",
        "not a PNG or JPEG",
        "a failed download",
    )
    error("gif_named.png", encode(Image.fromarray(small), "GIF"), "not a PNG or JPEG", "GIF content")
    error("bmp_named.jpg", encode(Image.fromarray(small), "BMP"), "not a PNG or JPEG", "BMP content")
    error("tiff_named.png", encode(Image.fromarray(small), "TIFF"), "not a PNG or JPEG", "TIFF content")
    error("png_signature_only.png", good_png[:8], "truncated or corrupt PNG header", "PNG signature, nothing else")
    error("truncated_header.png", good_png[:30], "truncated or corrupt PNG header", "cut inside IHDR")
    error("truncated_data.png", good_png[: len(good_png) // 2], "cannot decode image", "cut inside IDAT")
    error("truncated_header.jpg", good_jpeg[:40], "cannot decode image", "cut before the frame header")
    error("truncated_data.jpg", good_jpeg[: len(good_jpeg) // 2], "cannot decode image", "cut inside the scan")
    bad_crc = bytearray(good_png)
    bad_crc[33 + 8 + 10] ^= 0xFF  # a byte of the IDAT data, so its CRC no longer matches
    error("bad_crc.png", bytes(bad_crc), "cannot decode image", "corrupt IDAT")
    error("zero_width.png", raw_png(0, 10, 8, 0, b""), "truncated or corrupt PNG header", "IHDR width 0")

    # Decompression bombs and their relatives: refused before decoding.
    header_bomb = raw_png(65535, 65535, 8, 0, b"\x00" * 65536)
    error("bomb_header.png", header_bomb, "above the limit of 1000000 (--max-pixels)", "65535x65535 claimed, tiny data")
    sof = bytearray(good_jpeg)
    at = sof.find(b"\xff\xc0") + 5
    sof[at : at + 4] = struct.pack(">HH", 65000, 65000)
    error(
        "bomb_header.jpg",
        bytes(sof),
        "above the limit of 1000000 (--max-pixels)",
        "JPEG frame header claims 65000x65000",
    )
    zeros = b"".join(b"\x00" + bytes(1500) for _ in range(1500))
    error("bomb_real.png", raw_png(1500, 1500, 8, 0, zeros), "above the limit", "2.25 MP of zeros in a few KB")
    error(
        "bomb_strip.png",
        raw_png(200_000, 1, 8, 0, b"\x00" + bytes(200_000)),
        "becomes",
        "1x200000: small, but 64x200000 once padded to whole tiles",
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS, help="corpus directory (replaced)")
    args = parser.parse_args(argv)
    corpus = cases()
    total = sum(len(data) for data, _ in corpus.values())
    if total > BUDGET_BYTES:
        print(f"corpus is {total} bytes, over the {BUDGET_BYTES} budget", file=sys.stderr)
        return 1
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for name, (data, _) in corpus.items():
        (args.out / name).write_bytes(data)
    manifest = {
        "max_pixels": MAX_PIXELS,
        "made_by": "python tools/make_nasty_corpus.py",
        "cases": {name: entry for name, (_, entry) in sorted(corpus.items())},
    }
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(corpus)} files ({total} bytes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

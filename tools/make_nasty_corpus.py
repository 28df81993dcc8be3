"""Write tests/data/nasty/: a small corpus of hostile and unusual image files, with a manifest.

Run explicitly (numpy and Pillow only; the output is a function of this script):

    python tools/make_nasty_corpus.py            # rewrites tests/data/nasty/ and tests/data/nasty_archives/

Each file is listed in ``MANIFEST.json`` with what ``marsedge-run --max-pixels 1000000``
must do with it: ``"ok"`` (segmented; ``size`` is the expected ``[width, height]``)
or ``"error"`` (one ``error:`` line containing ``fragment``). Cases that depend on the
file system (FIFOs, symlink loops, newlines in names, read-only or full output
directories) are made at test time by tests/test_reliability_corpus.py instead.
The corpus stays under 200 KB.

``tests/data/nasty_archives/`` holds broken PDS products and ROS 2 bags (written with
``rosbags``, the [ros] extra; skipped without it), each listed in its ``MANIFEST.json``
with the ``error:`` lines ``marsedge-run`` must print for it (a fragment each, in order)
and how many of its frames must still be segmented.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "nasty"
ARCHIVES = ROOT / "tests" / "data" / "nasty_archives"
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


def archive_cases(folder: Path) -> dict[str, dict]:
    """Writes the broken PDS products and bags into ``folder``; name -> manifest entry
    (``errors``: fragments of the error lines, in order; ``segmented``: frames that must
    still be segmented)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_archives as archives

    frame = terrain(24, 32)
    cases: dict[str, dict] = {}

    def case(name: str, errors: list[str], segmented: int, why: str) -> None:
        cases[name] = {"errors": errors, "segmented": segmented, "why": why}

    def label_product(name: str, label: str, data: bytes) -> None:
        (folder / name).write_bytes(label.encode("ascii") + data)

    good = archives.pds3_attached(folder / "good.IMG", frame, product_id="GOOD_PRODUCT")
    case("good.IMG", [], 1, "a valid product among the broken ones")
    text = good.read_bytes()
    header = text[: len(text) - frame.size]

    label_product(
        "broken_label.IMG", "PDS_VERSION_ID = PDS3\r\nOBJECT = IMAGE\r\n  LINES = = (\r\nEND_OB", frame.tobytes()
    )
    case("broken_label.IMG", ["cannot read the PDS label"], 0, "a label cut mid-statement")
    label_product(
        "no_image_pointer.IMG", "PDS_VERSION_ID = PDS3\r\nRECORD_BYTES = 32\r\nEND\r\n".ljust(64), frame.tobytes()
    )
    case("no_image_pointer.IMG", ["the PDS3 label points to no IMAGE object"], 0, "no ^IMAGE pointer")
    (folder / "wrong_file_records.IMG").write_bytes(
        re.sub(rb"FILE_RECORDS = \d\d", b"FILE_RECORDS = 99", header) + frame.tobytes()
    )
    case("wrong_file_records.IMG", ["truncated: the label declares 99 records"], 0, "FILE_RECORDS past the end")
    (folder / "wrong_lines.IMG").write_bytes(header.replace(b"LINES = 24", b"LINES = 48") + frame.tobytes())
    case("wrong_lines.IMG", ["truncated: the IMAGE object needs"], 0, "LINES twice what the file holds")
    (folder / "truncated.IMG").write_bytes(text[: len(header) + frame.size // 2])
    case("truncated.IMG", ["truncated: the label declares"], 0, "data cut in half")

    def float_label(records: int) -> str:
        text = archives.pds3_label(24, 8, product_id="FLOAT", record_bytes=32, label_records=records)
        return text.replace("MSB_UNSIGNED_INTEGER", "IEEE_REAL").replace("SAMPLE_BITS = 8", "SAMPLE_BITS = 32")

    records = next(n for n in range(1, 99) if len(float_label(n)) <= n * 32)
    floats = np.linspace(0, 1, 24 * 8, dtype=">f4").tobytes()
    (folder / "float_samples.IMG").write_bytes(float_label(records).encode("ascii").ljust(records * 32) + floats)
    case("float_samples.IMG", ["float32 samples are not supported"], 0, "32-bit float samples")
    archives.pds3_detached(folder / "missing_data.LBL", frame)
    (folder / "missing_data.IMG").unlink()
    case("missing_data.LBL", ["the data file of the IMAGE object is missing (missing_data.IMG)"], 0, "no data file")
    archives.pds4_pair(folder / "pds4_cut.xml", frame)
    (folder / "pds4_cut.img").write_bytes((folder / "pds4_cut.img").read_bytes()[:100])
    case("pds4_cut.xml", ["truncated: the image array needs 768 bytes, pds4_cut.img has 100"], 0, "PDS4 data cut short")
    (folder / "pds4_broken.xml").write_text(
        "<?xml version='1.0'?>\n<Product_Observational><Identification_Area>", encoding="utf-8"
    )
    case("pds4_broken.xml", ["cannot read the PDS label"], 0, "XML cut mid-element")

    try:
        import rosbags  # noqa: F401
    except ImportError:
        print("rosbags is not installed: the corpus has no bags", file=sys.stderr)
        return cases
    frames = [frame, 255 - frame, frame[::-1], frame[:, ::-1]]
    archives.write_bag(folder / "bag_corrupt_message", frames, ("mono8",), corrupt=(1,))
    case("bag_corrupt_message", ["message 1: cannot deserialise the message"], 3, "one message cut short (sqlite3)")
    archives.write_bag(folder / "bag_corrupt_mcap", frames, ("mono8",), storage="mcap", corrupt=(2,))
    case("bag_corrupt_mcap", ["message 2: cannot deserialise the message"], 3, "one message cut short (mcap)")
    _rewrite_messages(folder / "bag_bad_images", frames)
    case(
        "bag_bad_images",
        ["message 1: unsupported encoding 'yuv422'", "message 2: data holds", "message 3: not a PNG or JPEG image"],
        1,
        "an unknown encoding, data shorter than step x height, a CompressedImage of noise",
    )
    archives.write_bag(folder / "bag_cut.mcap.d", frames, ("mono8",), storage="mcap")
    data = next((folder / "bag_cut.mcap.d").glob("*.mcap")).read_bytes()
    shutil.rmtree(folder / "bag_cut.mcap.d")
    (folder / "bag_cut.mcap").write_bytes(data[: len(data) // 2])
    case("bag_cut.mcap", ["cannot open the bag"], 0, "an MCAP file cut in half (no summary, no footer)")
    (folder / "bag_bad_metadata").mkdir()
    (folder / "bag_bad_metadata" / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n", encoding="utf-8")
    case("bag_bad_metadata", ["cannot open the bag"], 0, "metadata.yaml that is not YAML")
    return cases


def _rewrite_messages(path: Path, frames: list[np.ndarray]) -> None:
    """A bag of four messages: a good mono8 frame, then one each with an unsupported
    encoding, too little data, and a CompressedImage of random bytes."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    image, compressed = types["sensor_msgs/msg/Image"], types["sensor_msgs/msg/CompressedImage"]
    height, width = frames[0].shape

    def header(i: int):
        return types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=10 + i, nanosec=0), frame_id="cam"
        )

    def raw(i: int, encoding: str, data: np.ndarray, step: int):
        return image(
            header=header(i), height=height, width=width, encoding=encoding, is_bigendian=0, step=step, data=data
        )

    topic = "/navcam/left/image_raw"
    with Writer(path, version=9) as writer:
        plain = writer.add_connection(topic, image.__msgtype__, typestore=typestore)
        squeezed = writer.add_connection(topic, compressed.__msgtype__, typestore=typestore)
        messages = [
            (plain, raw(0, "mono8", frames[0].ravel(), width)),
            (plain, raw(1, "yuv422", np.zeros(height * width * 2, np.uint8), width * 2)),
            (plain, raw(2, "mono8", frames[2].ravel()[: width * 3], width)),
            (squeezed, compressed(header=header(3), format="png", data=_rng.integers(0, 256, 300, dtype=np.uint8))),
        ]
        for i, (connection, message) in enumerate(messages):
            writer.write(connection, (10 + i) * 10**9, typestore.serialize_cdr(message, connection.msgtype))


def write_archives(folder: Path) -> int:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cases = archive_cases(folder)
    manifest = {
        "max_pixels": MAX_PIXELS,
        "made_by": "python tools/make_nasty_corpus.py",
        "cases": dict(sorted(cases.items())),
    }
    (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {len(cases)} archive cases ({total} bytes) to {folder}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS, help="corpus directory (replaced)")
    parser.add_argument("--archives-out", type=Path, default=ARCHIVES, help="archive corpus directory (replaced)")
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
    if write_archives(args.archives_out) > BUDGET_BYTES:
        print(f"the archive corpus is over the {BUDGET_BYTES} budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write frames as PDS products and ROS 2 bags: the tests', the nasty corpus' and the
archive throughput probe's inputs.

PDS labels are written as text here (no library needed); bags need ``rosbags`` (the
``[ros]`` extra). Run as a script to turn PNG frames into a folder of products and bags:

    python tools/make_archives.py ../shared/data/samples/*.png --out /tmp/archives

writes ``pds3/`` (attached labels), ``pds3-detached/``, ``pds4/``, ``pds3-16bit/`` (12-bit
samples in 16-bit words) and ``bag-sqlite3/``, ``bag-mcap/`` (one mono8 message per frame on
``/navcam/left/image_raw``).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

TOPIC = "/navcam/left/image_raw"
IDENTITY = {"instrument_id": "NAV_LEFT_B", "sol": 1234, "spacecraft_clock_start": "439225290.123"}


def pds3_label(
    lines: int,
    samples: int,
    *,
    product_id: str,
    sample_bits: int = 8,
    sample_type: str = "MSB_UNSIGNED_INTEGER",
    bands: int = 1,
    record_bytes: int | None = None,
    label_records: int = 0,
    file_records: int | None = None,
    pointer: str | None = None,
    line_prefix_bytes: int = 0,
    extra: str = "",
    image_extra: str = "",
) -> str:
    """A PDS3 label (PVL text, no padding)."""
    word = max(1, sample_bits // 8) if sample_bits > 8 else 1
    record_bytes = record_bytes or samples * word + line_prefix_bytes
    data_records = lines * bands
    file_records = file_records if file_records is not None else label_records + data_records
    pointer = pointer or str(label_records + 1)
    prefix = f"  LINE_PREFIX_BYTES = {line_prefix_bytes}\n" if line_prefix_bytes else ""
    container = 16 if sample_bits > 8 else 8
    bits = f"  SAMPLE_BITS = {container}\n" + (
        f"  SAMPLE_BIT_MASK = 2#{'0' * (16 - sample_bits)}{'1' * sample_bits}#\n" if 8 < sample_bits < 16 else ""
    )
    return (
        "PDS_VERSION_ID = PDS3\r\n"
        "RECORD_TYPE = FIXED_LENGTH\r\n"
        f"RECORD_BYTES = {record_bytes}\r\n"
        f"FILE_RECORDS = {file_records}\r\n"
        + (f"LABEL_RECORDS = {label_records}\r\n" if label_records else "")
        + f"^IMAGE = {pointer}\r\n"
        f'PRODUCT_ID = "{product_id}"\r\n'
        f'INSTRUMENT_ID = "{IDENTITY["instrument_id"]}"\r\n'
        f"PLANET_DAY_NUMBER = {IDENTITY['sol']}\r\n"
        f'SPACECRAFT_CLOCK_START_COUNT = "{IDENTITY["spacecraft_clock_start"]}"\r\n'
        f"{extra}"
        "OBJECT = IMAGE\r\n"
        f"  LINES = {lines}\r\n"
        f"  LINE_SAMPLES = {samples}\r\n"
        f"  SAMPLE_TYPE = {sample_type}\r\n"
        + bits
        + f"  BANDS = {bands}\r\n"
        + ("  BAND_STORAGE_TYPE = BAND_SEQUENTIAL\r\n" if bands > 1 else "")
        + prefix
        + image_extra
        + "END_OBJECT = IMAGE\r\nEND\r\n"
    )


def samples_of(image: np.ndarray, sample_bits: int = 8) -> np.ndarray:
    """The stored samples for an 8-bit frame: itself, or scaled to ``sample_bits`` in
    big-endian 16-bit words."""
    if sample_bits == 8:
        return image.astype(np.uint8)
    top = (1 << sample_bits) - 1
    return ((image.astype(np.uint32) * top + 127) // 255).astype(">u2")


def pds3_attached(
    path: Path,
    image: np.ndarray,
    product_id: str | None = None,
    sample_bits: int = 8,
    line_prefix_bytes: int = 0,
    image_extra: str = "",
) -> Path:
    """An ``.IMG`` with an attached PDS3 label; ``image`` is (H, W) or (bands, H, W) 8-bit;
    ``image_extra``: more lines for the IMAGE object."""
    planes = image if image.ndim == 3 else image[None]
    bands, lines, samples = planes.shape
    stored = samples_of(planes, sample_bits)
    word = stored.dtype.itemsize
    record_bytes = samples * word + line_prefix_bytes
    product_id = product_id or path.stem
    label_records = 1
    while True:  # the label's own size decides how many records it takes
        text = pds3_label(
            lines, samples, product_id=product_id, sample_bits=sample_bits, bands=bands,
            record_bytes=record_bytes, label_records=label_records, line_prefix_bytes=line_prefix_bytes,
            image_extra=image_extra,
        )  # fmt: skip
        needed = -(-len(text) // record_bytes)
        if needed <= label_records:
            break
        label_records = needed
    rows = np.ascontiguousarray(stored).reshape(bands * lines, samples).view(np.uint8)
    if line_prefix_bytes:
        rows = np.concatenate([np.full((bands * lines, line_prefix_bytes), 0xAB, np.uint8), rows], axis=1)
    path.write_bytes(text.encode("ascii").ljust(label_records * record_bytes, b" ") + rows.tobytes())
    return path


def pds3_detached(label_path: Path, image: np.ndarray, product_id: str | None = None, sample_bits: int = 8) -> Path:
    """A ``.LBL`` + ``.IMG`` pair (the label points into the data file)."""
    lines, samples = image.shape
    data_path = label_path.with_suffix(".IMG")
    stored = samples_of(image, sample_bits)
    data_path.write_bytes(stored.tobytes())
    label = pds3_label(
        lines, samples, product_id=product_id or label_path.stem, sample_bits=sample_bits,
        record_bytes=samples * stored.dtype.itemsize, pointer=f'("{data_path.name}", 1)',
    )  # fmt: skip
    label_path.write_text(label, encoding="ascii")
    return label_path


def pds4_pair(label_path: Path, image: np.ndarray, product_id: str | None = None, sample_bits: int = 8) -> Path:
    """A PDS4 ``.xml`` label and its ``.img`` (Array_2D_Image, lines then samples)."""
    lines, samples = image.shape
    data_path = label_path.with_suffix(".img")
    stored = samples_of(image, sample_bits)
    data_path.write_bytes(stored.tobytes())
    data_type = "UnsignedByte" if sample_bits == 8 else "UnsignedMSB2"
    lid = f"urn:nasa:pds:marsedge_test:data:{(product_id or label_path.stem).lower()}"
    label_path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<Product_Observational xmlns="http://pds.nasa.gov/pds4/pds/v1" xmlns:msn="http://pds.nasa.gov/pds4/msn/v1">
  <Identification_Area>
    <logical_identifier>{lid}</logical_identifier>
    <version_id>1.0</version_id>
    <title>marsedge test frame</title>
    <information_model_version>1.15.0.0</information_model_version>
    <product_class>Product_Observational</product_class>
  </Identification_Area>
  <Observation_Area>
    <Time_Coordinates><start_date_time>2020-01-01T00:00:00Z</start_date_time><stop_date_time>2020-01-01T00:00:01Z</stop_date_time></Time_Coordinates>
    <Investigation_Area><name>MSL</name><type>Mission</type></Investigation_Area>
    <Observing_System>
      <Observing_System_Component><name>MSL</name><type>Spacecraft</type></Observing_System_Component>
      <Observing_System_Component><name>{IDENTITY["instrument_id"]}</name><type>Instrument</type></Observing_System_Component>
    </Observing_System>
    <Target_Identification><name>Mars</name><type>Planet</type></Target_Identification>
    <Mission_Area><msn:Mission_Information><msn:sol_number>{IDENTITY["sol"]}</msn:sol_number><msn:spacecraft_clock_start>{IDENTITY["spacecraft_clock_start"]}</msn:spacecraft_clock_start></msn:Mission_Information></Mission_Area>
  </Observation_Area>
  <File_Area_Observational>
    <File><file_name>{data_path.name}</file_name></File>
    <Array_2D_Image>
      <local_identifier>image</local_identifier>
      <offset unit="byte">0</offset>
      <axes>2</axes>
      <axis_index_order>Last Index Fastest</axis_index_order>
      <Element_Array><data_type>{data_type}</data_type></Element_Array>
      <Axis_Array><axis_name>Line</axis_name><elements>{lines}</elements><sequence_number>1</sequence_number></Axis_Array>
      <Axis_Array><axis_name>Sample</axis_name><elements>{samples}</elements><sequence_number>2</sequence_number></Axis_Array>
    </Array_2D_Image>
  </File_Area_Observational>
</Product_Observational>
""",
        encoding="utf-8",
    )
    return label_path


def colour_of(image: np.ndarray) -> np.ndarray:
    """An RGB frame made from a grey one (three different channels), for colour encodings."""
    return np.stack([image, np.roll(image, 7, axis=1), 255 - image], axis=-1)


def image_message(
    typestore, image: np.ndarray, encoding: str, sec: int, nanosec: int = 0, frame_id: str = "navcam_left"
):
    """A sensor_msgs/Image (``encoding``: mono8, mono16, rgb8, bgr8, rgba8, bgra8) or, for
    ``jpeg``/``png``, a sensor_msgs/CompressedImage of the 8-bit ``image``: grey (H, W) for
    mono and compressed encodings (for mono16, a uint16 ``image`` is taken as its levels), RGB (H, W, 3) for the colour ones (laid out in the
    encoding's channel order, with an opaque alpha channel where it has one)."""
    types = typestore.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )
    height, width = image.shape[:2]
    if encoding in ("jpeg", "png"):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=encoding.upper(), **({"quality": 95} if encoding == "jpeg" else {}))
        data = np.frombuffer(buffer.getvalue(), np.uint8)
        return types["sensor_msgs/msg/CompressedImage"](header=header, format=encoding, data=data)
    if encoding == "mono16":  # an 8-bit frame spread over 16 bits; uint16 levels as they are
        levels = image if image.dtype == np.uint16 else image.astype(np.uint16) * 257
        pixels = levels.astype(">u2").view(np.uint8)  # big-endian, as is_bigendian says
        return types["sensor_msgs/msg/Image"](
            header=header, height=height, width=width, encoding=encoding, is_bigendian=1,
            step=width * 2, data=pixels.ravel(),
        )  # fmt: skip
    if encoding == "mono8":
        pixels = image[..., None]
    else:
        rgb = image if image.ndim == 3 else colour_of(image)
        pixels = rgb[..., ::-1] if encoding.startswith("bgr") else rgb
        if encoding.endswith("a8"):
            pixels = np.concatenate([pixels, np.full((height, width, 1), 255, np.uint8)], axis=-1)
    return types["sensor_msgs/msg/Image"](
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * pixels.shape[-1], data=np.ascontiguousarray(pixels).ravel(),
    )  # fmt: skip


def write_bag(
    path: Path,
    frames: Sequence[np.ndarray],
    encodings: Sequence[str] = ("mono8",),
    storage: str = "sqlite3",
    topic: str = TOPIC,
    corrupt: Sequence[int] = (),
    extra_topics: bool = False,
) -> Path:
    """A rosbag2 directory with one image message per frame on ``topic`` (``encodings[i %
    len]`` for frame i; stamps 1700000000 + i s, 5 ns); ``corrupt``: message indices
    written as cut-short CDR; ``extra_topics``: also a second image topic and a non-image
    one."""
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import StoragePlugin
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for i, frame in enumerate(frames):
            encoding = encodings[i % len(encodings)]
            message = image_message(typestore, frame, encoding, 1_700_000_000 + i, 5)
            kind = message.__msgtype__
            if kind not in connections:
                connections[kind] = writer.add_connection(
                    topic if kind.endswith("/Image") else topic + "/compressed", kind, typestore=typestore
                )
            data = typestore.serialize_cdr(message, kind)
            if i in corrupt:
                data = data[: len(data) // 3]
            writer.write(connections[kind], (1_700_000_000 + i) * 10**9 + 5, data)
        if extra_topics:
            other = writer.add_connection("/navcam/right/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
            writer.write(
                other,
                1_700_000_000 * 10**9,
                typestore.serialize_cdr(image_message(typestore, frames[0], "mono8", 1), "sensor_msgs/msg/Image"),
            )
            status = writer.add_connection("/rosout_count", "std_msgs/msg/UInt32", typestore=typestore)
            writer.write(
                status,
                1_700_000_000 * 10**9,
                typestore.serialize_cdr(typestore.types["std_msgs/msg/UInt32"](data=1), "std_msgs/msg/UInt32"),
            )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", nargs="+", type=Path, help="8-bit grey PNG frames")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must not exist)")
    parser.add_argument("--copies", type=int, default=1, help="write each frame this many times (a bigger archive)")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out}: exists already", file=sys.stderr)
        return 1
    images = [(p.stem, np.asarray(Image.open(p).convert("L"))) for p in args.frames] * args.copies
    folders = {name: args.out / name for name in ("png", "pds3", "pds3-detached", "pds4", "pds3-16bit")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for i, (stem, image) in enumerate(images):
        name = f"{stem}-{i:04d}" if args.copies > 1 else stem
        Image.fromarray(image).save(folders["png"] / f"{name}.png")
        pds3_attached(folders["pds3"] / f"{name}.IMG", image)
        pds3_detached(folders["pds3-detached"] / f"{name}.LBL", image)
        pds4_pair(folders["pds4"] / f"{name}.xml", image)
        pds3_attached(folders["pds3-16bit"] / f"{name}.IMG", image, sample_bits=12)
    frames = [image for _, image in images]
    write_bag(args.out / "bag-sqlite3", frames)
    write_bag(args.out / "bag-mcap", frames, storage="mcap")
    print(f"wrote {len(images)} frames as PNG, PDS and bags to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

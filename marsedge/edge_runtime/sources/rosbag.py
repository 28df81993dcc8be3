"""ROS bags as frames: every image message of one topic, and a bag of masks back.

Read with ``rosbags`` (pure Python, no ROS install; the ``[ros]`` extra), imported only
when a bag is read. A bag is a rosbag2 directory (``metadata.yaml`` with ``.db3`` or
``.mcap`` storage), a single ``.db3`` or ``.mcap`` file, or a ROS 1 ``.bag``. Message
types come from the definitions the bag carries (ROS 2 Humble's when it carries none).

``sensor_msgs/Image`` in mono8, mono16, rgb8, bgr8, rgba8 and bgra8 and
``sensor_msgs/CompressedImage`` holding JPEG or PNG become the levels the same pixels in
a PNG would (:func:`.grey.to_gray8`, :func:`.imageio.decode_frame`): uint8 grey, or uint16
levels for mono16 and 16-bit PNG messages, read with the run's bit depth as a 16-bit PNG
is (:func:`.grey.frame_to_gray8`). Each frame is named by its header stamp (``SEC.NANOSEC``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.core.errors import first_line

from ..errors import ImageError
from ..grey import to_gray8
from ..imageio import check_size, decode_frame
from .bitdepth import samples_to_levels

BAG_SUFFIXES = (".mcap", ".db3", ".bag")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
MASK_TOPIC_SUFFIX = "/marsedge/mask"
# bytes per pixel and channel layout of the raw encodings read
_ENCODINGS = {
    "mono8": (1, None),
    "8uc1": (1, None),
    "mono16": (2, None),
    "16uc1": (2, None),
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
}


@dataclass
class BagFrame:
    """One image message of a bag: its pixels, or why they could not be read.

    Attributes:
        index: the message's place among the topic's messages (0-based).
        stem: output stem from the header stamp, ``SEC.NANOSEC``.
        levels: uint8 (H, W) grey, or uint16 levels of a 16-bit message (mono16, a 16-bit
            PNG) for the bit-depth handling; None when ``error`` says why not.
        identity: ``bag``, ``topic``, ``index``, ``timestamp_ns`` (the bag's log time),
            ``stamp`` (``sec``, ``nanosec``), ``frame_id``, ``encoding``.
        error: why this message cannot be segmented (the rest of the bag goes on).
        load_ms: milliseconds to deserialise and decode it.
    """

    index: int
    stem: str
    levels: np.ndarray | None
    identity: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    load_ms: float = 0.0


def is_bag(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a bag: a directory with ``metadata.yaml``, or a ``.mcap``,
    ``.db3`` or ``.bag`` file."""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "metadata.yaml"))
    return os.path.splitext(os.fspath(path))[1].lower() in BAG_SUFFIXES


def read_bag(
    path: str | os.PathLike[str],
    topic: str | None = None,
    max_pixels: int | None = None,
    work_pixels: Callable[[int, int], int] | None = None,
) -> Iterator[BagFrame]:
    """The image messages of ``topic`` in the bag at ``path``, in log-time order.

    Args:
        path: the bag (see module docs).
        topic: the image topic; None: the bag's only image topic.
        max_pixels, work_pixels: size limits, as :func:`.imageio.load_gray` applies them.

    Yields one :class:`BagFrame` per message; a message that cannot be read is a frame
    with ``error`` set, and the next message follows.

    Raises:
        MissingReaderError: ``rosbags`` is not installed.
        ImageError: the bag cannot be opened, or ``topic`` is not one of its image
            topics (the message lists those it has), or it has none.
    """
    with BagMessages(path, topic) as bag:
        messages = bag.reader.messages(connections=bag.connections)
        index = 0
        while True:
            start = time.perf_counter()
            try:
                item = next(messages)
            except StopIteration:
                return
            except Exception as exc:  # corrupt storage past this point: the rest cannot be read
                reason = f"cannot read the bag from here on: {_why(exc)}"
                yield BagFrame(index, f"message-{index}", None, {}, reason)
                return
            connection, timestamp, raw = item
            yield _frame(bag.reader, connection, timestamp, raw, index, bag.path, max_pixels, work_pixels, start)
            index += 1


def image_topics(reader: Any) -> dict[str, tuple[str, int]]:
    """The bag's image topics: topic -> (message type, message count)."""
    found: dict[str, tuple[str, int]] = {}
    for connection in reader.connections:
        if connection.msgtype in IMAGE_TYPES:
            _, count = found.get(connection.topic, (connection.msgtype, 0))
            found[connection.topic] = (connection.msgtype, count + (connection.msgcount or 0))
    return found


def _topic_connections(reader: Any, topic: str | None) -> list[Any]:
    topics = image_topics(reader)
    listed = ", ".join(
        f"{name} ({kind.rsplit('/', 1)[-1]}, {count} messages)" for name, (kind, count) in topics.items()
    )
    if not topics:
        others = sorted({c.topic for c in reader.connections})
        raise ImageError(
            "no image topics (sensor_msgs/Image or CompressedImage) in this bag"
            + (f"; its topics: {', '.join(others)}" if others else "")
        )
    if topic is None:
        if len(topics) > 1:
            raise ImageError(f"several image topics, choose one with --topic: {listed}")
        topic = next(iter(topics))
    if topic not in topics:
        raise ImageError(f"no image topic {topic} in this bag; its image topics: {listed}")
    return [c for c in reader.connections if c.topic == topic and c.msgtype in IMAGE_TYPES]


def _frame(
    reader: Any,
    connection: Any,
    timestamp: int,
    raw: bytes,
    index: int,
    bag: Path,
    max_pixels: int | None,
    work_pixels: Callable[[int, int], int] | None,
    start: float,
) -> BagFrame:
    identity: dict[str, Any] = {"bag": str(bag), "topic": connection.topic, "index": index, "timestamp_ns": timestamp}
    stem = f"message-{index}"
    try:
        message = reader.deserialize(raw, connection.msgtype)
        header = message.header
        identity["stamp"] = {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)}
        identity["frame_id"] = str(header.frame_id)
        stem = f"{int(header.stamp.sec)}.{int(header.stamp.nanosec):09d}"
    except Exception as exc:
        return BagFrame(index, stem, None, identity, f"cannot deserialise the message: {_why(exc)}")
    try:
        if connection.msgtype.endswith("CompressedImage"):
            identity["encoding"] = str(message.format)
            levels = decode_frame(bytes(message.data), f"{bag} message {index}", max_pixels, work_pixels)
        else:
            identity["encoding"] = str(message.encoding)
            levels = _raw_image(message, max_pixels, work_pixels)
    except ImageError as exc:
        return BagFrame(index, stem, None, identity, str(exc))
    return BagFrame(index, stem, levels, identity, None, (time.perf_counter() - start) * 1e3)


def _raw_image(message: Any, max_pixels: int | None, work_pixels: Callable[[int, int], int] | None) -> np.ndarray:
    """A ``sensor_msgs/Image`` as uint8 grey (uint16 levels for mono16), reading ``step`` bytes per row."""
    encoding = str(message.encoding).lower()
    if encoding not in _ENCODINGS:
        raise ImageError(f"unsupported encoding {message.encoding!r} (read: {', '.join(_ENCODINGS)})")
    size, channels = _ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image of {width}x{height}")
    check_size(width, height, max_pixels, work_pixels)
    data = np.asarray(message.data, dtype=np.uint8)
    if step < width * size:
        raise ImageError(f"step {step} is shorter than a row of {width} {encoding} pixels ({width * size} bytes)")
    if data.size < step * (height - 1) + width * size:
        raise ImageError(
            f"data holds {data.size} bytes, {width}x{height} {encoding} at step {step} needs {step * height}"
        )
    rows = np.lib.stride_tricks.as_strided(data, (height, width * size), (step, 1))
    if size == 2:
        dtype = ">u2" if message.is_bigendian else "<u2"
        return samples_to_levels(np.ascontiguousarray(rows).view(dtype))
    if channels is None:
        return np.ascontiguousarray(rows)
    pixels = rows.reshape(height, width, size)[:, :, list(channels)]
    return to_gray8(np.ascontiguousarray(pixels))


class MaskBagWriter:
    """Writes a bag of masks: per segmented message, a ``sensor_msgs/Image`` mono8 mask
    (pixel values are class ids) on ``TOPIC/marsedge/mask`` with the input's header (stamp
    and frame_id) and log time, so it lines up in rviz or Foxglove.

    The bag is written under a hidden name beside ``path`` and renamed into place on
    :meth:`close`; :meth:`abort` removes it.
    """

    def __init__(self, path: str | os.PathLike[str], mcap: bool = False) -> None:
        from . import require

        require("rosbags", "ros", "writing ROS bags")
        from rosbags.rosbag2 import Writer
        from rosbags.rosbag2.enums import StoragePlugin
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise ImageError("exists already: give --bag-out a new directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent))
        os.rmdir(self._partial)  # the writer creates it
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        plugin = StoragePlugin.MCAP if mcap else StoragePlugin.SQLITE3
        self._writer = Writer(self._partial, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.count = 0

    def add(self, frame: BagFrame, mask: np.ndarray) -> None:
        """Writes ``mask`` for the message ``frame`` was read from."""
        types = self.typestore.types
        image, header, stamp = (
            types["sensor_msgs/msg/Image"],
            types["std_msgs/msg/Header"],
            types["builtin_interfaces/msg/Time"],
        )
        topic = frame.identity["topic"].rstrip("/") + MASK_TOPIC_SUFFIX
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, image.__msgtype__, typestore=self.typestore)
        when = frame.identity.get("stamp", {"sec": 0, "nanosec": 0})
        height, width = mask.shape
        message = image(
            header=header(
                stamp=stamp(sec=when["sec"], nanosec=when["nanosec"]), frame_id=frame.identity.get("frame_id", "")
            ),
            height=height,
            width=width,
            encoding="mono8",
            is_bigendian=0,
            step=width,
            data=np.ascontiguousarray(mask, dtype=np.uint8).ravel(),
        )
        data = self.typestore.serialize_cdr(message, image.__msgtype__)
        self._writer.write(self._connections[topic], int(frame.identity.get("timestamp_ns", 0)), data)
        self.count += 1

    def close(self) -> Path:
        """Finishes the bag and moves it into place; returns its path."""
        self._writer.close()
        storage = next(self._partial.glob("*.db3"), None) or next(self._partial.glob("*.mcap"), None)
        if storage is not None:  # the storage file is named after the directory, as ros2 bag names it
            renamed = storage.with_name(self.path.name + storage.suffix)
            storage.rename(renamed)
            meta = self._partial / "metadata.yaml"
            meta.write_text(meta.read_text(encoding="utf-8").replace(storage.name, renamed.name), encoding="utf-8")
        os.rename(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Closes and removes the partial bag."""
        import shutil

        try:
            self._writer.close()
        except Exception:
            pass
        shutil.rmtree(self._partial, ignore_errors=True)


def _why(exc: BaseException) -> str:
    """An exception as one line; rosbags' own errors explain themselves without their type."""
    return first_line(exc, name_unknown=not type(exc).__module__.startswith("rosbags"))


def uses_mcap(path: str | os.PathLike[str]) -> bool:
    """Whether a bag is stored as MCAP (a ``.mcap`` file, or a directory holding one)."""
    bag = Path(path)
    if bag.is_dir():
        return any(bag.glob("*.mcap"))
    return bag.suffix.lower() == ".mcap"


@dataclass(frozen=True)
class BagMessage:
    """Where one image message of a bag is, as a listing gives it (no pixels decoded).

    Attributes:
        index: its place among the topic's messages (0-based).
        stem: output stem from its header stamp.
        timestamp: the bag's log time (ns); ``rank``: how many earlier messages of the
            topic share it (a message is found again by the two).
    """

    index: int
    stem: str
    timestamp: int
    rank: int = 0


def list_messages(path: str | os.PathLike[str], topic: str | None = None) -> tuple[str, list[BagMessage]]:
    """The image topic read (``topic``, or the bag's only one) and its messages, in order.

    Raises:
        MissingReaderError, ImageError: as :func:`read_bag`.
    """
    with BagMessages(path, topic) as bag:
        found: list[BagMessage] = []
        previous, rank = None, 0
        for index, (connection, timestamp, raw) in enumerate(bag.reader.messages(connections=bag.connections)):
            rank = rank + 1 if timestamp == previous else 0
            previous = timestamp
            try:
                header = bag.reader.deserialize(raw, connection.msgtype).header
                stem = f"{int(header.stamp.sec)}.{int(header.stamp.nanosec):09d}"
            except Exception:  # read (and reported) when the message itself is segmented
                stem = f"message-{index}"
            found.append(BagMessage(index, stem, timestamp, rank))
        return bag.topic, found


class BagMessages:
    """A bag held open to read single messages of one image topic (a worker reading the
    messages a job gave it)."""

    def __init__(self, path: str | os.PathLike[str], topic: str | None = None) -> None:
        from . import require

        require("rosbags", "ros", "reading ROS bags")
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if not self.path.exists():
            raise ImageError("no such file or directory")
        try:
            self.reader = AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
            self.reader.open()
        except Exception as exc:
            raise ImageError(f"cannot open the bag: {_why(exc)}") from None
        try:
            self.connections = _topic_connections(self.reader, topic)
        except BaseException:
            self.close()
            raise
        self.topic = self.connections[0].topic

    def read(
        self,
        message: BagMessage,
        max_pixels: int | None = None,
        work_pixels: Callable[[int, int], int] | None = None,
    ) -> BagFrame:
        """The frame of one listed message (``error`` set when it cannot be read)."""
        start = time.perf_counter()
        try:
            found = self.reader.messages(
                connections=self.connections, start=message.timestamp, stop=message.timestamp + 1
            )
            for rank, item in enumerate(found):
                if rank == message.rank:
                    connection, timestamp, raw = item
                    break
            else:
                return BagFrame(message.index, message.stem, None, {}, "the message is no longer in the bag")
        except Exception as exc:
            return BagFrame(message.index, message.stem, None, {}, f"cannot read the message: {_why(exc)}")
        return _frame(self.reader, connection, timestamp, raw, message.index, self.path, max_pixels, work_pixels, start)

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:
            pass

    def __enter__(self) -> BagMessages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

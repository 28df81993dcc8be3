"""``marsedge batch``: segment a mission archive on a Ray instance.

The frames are listed on the driver (a folder, a glob, or a text file of paths; paths
may be URIs of any filesystem pyarrow reads, e.g. ``s3://``; PDS products; ROS bags, one
frame per image message of ``--topic``), each given the output stem ``marsedge-run`` would
give it in the same order. Frames whose outputs are already
complete are skipped (resume); the rest become a Ray dataset of paths, and
``map_batches`` hands them to a pool of actors. Each actor holds one edge-runtime
:class:`~marsedge.edge_runtime.Segmenter` (one interpreter, ``threads`` CPU threads) and
runs :func:`marsedge.edge_runtime.batch.segment_file` on every frame: the same function
``marsedge-run`` calls, so the masks, overlays and JSON records are the ones
``marsedge-run`` writes, under the same names, written atomically the same way. A frame
that cannot be read or used is a row with its error, never a failed job.

A frame is done only when its record was written under the same model (SHA-256) and the
same mask options (:meth:`~marsedge.edge_runtime.Segmenter.mask_settings`: tile overlap,
TTA, resize, bit depth, confidence threshold, ignore mask): a rerun with another model or
option segments the frames again and says how many, so an output folder never mixes two
models' masks.

The driver streams the actors' result rows (progress shown) and writes one Parquet table,
``DEST/marsedge-batch.parquet``: a row per frame, segmented now, earlier, or failed.

DEST must be a directory every worker can write (one machine, or a shared filesystem).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from marsedge.cluster import LOCAL, cluster_cpus, connect, quiet_ray_loggers, require_ray, sizing
from marsedge.edge_runtime.batch import (
    expand_inputs,
    frame_gray,
    output_stem,
    segment_file,
    unique_name,
    write_outputs,
)
from marsedge.edge_runtime.errors import ImageError
from marsedge.edge_runtime.imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, write_atomic
from marsedge.edge_runtime.segmenter import Segmenter, SegmenterOptions, model_path
from marsedge.edge_runtime.sources import FRAME_SUFFIXES, SourceOptions, is_bag
from marsedge.errors import DataError, MarsEdgeError

log = logging.getLogger(__name__)

TABLE_NAME = "marsedge-batch.parquet"
DEFAULT_BATCH_SIZE = 4
STAGES = ("load", "preprocess", "infer", "postprocess", "write", "total")
SEGMENTED, EARLIER, FAILED = "segmented", "done earlier", "failed"

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BatchOptions:
    """What ``marsedge batch`` does; the CLI maps its options onto these one to one.

    Attributes:
        sources: folders, globs, text files of paths (one per line; ``#`` comments),
            image files or URIs.
        out: the output directory (created; shared by every worker).
        address: the Ray instance: ``local`` (start one here), ``auto`` (the one ``ray
            start --head`` started on this machine), ``host:port`` or ``ray://host:10001``;
            None: ``$RAY_ADDRESS`` if set, else local.
        workers: actors, each holding one Segmenter (default: CPUs / threads).
        threads: interpreter threads per actor (default: CPUs / workers, so that
            workers x threads = the CPUs of the instance).
        overlay: also write ``<stem>_overlay.png``.
        confidence: also write ``<stem>_confidence.png``.
        max_pixels: refuse larger frames (as ``marsedge-run --max-pixels``); None: off.
        batch_size: frames per ``map_batches`` call.
        segmenter: model and resize options (``threads`` is set per actor).
        source: how PDS products and bags are read (``band``, ``topic``).
        bag_out: also write a bag of the bag frames' masks here (as ``marsedge-run
            --bag-out``), after the job, in listing order.
    """

    sources: tuple[str, ...]
    out: Path
    address: str | None = None
    workers: int | None = None
    threads: int | None = None
    overlay: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    batch_size: int = DEFAULT_BATCH_SIZE
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    confidence: bool = False
    source: SourceOptions = field(default_factory=SourceOptions)
    bag_out: Path | None = None


@dataclass(frozen=True)
class Frame:
    """One frame of the job: its path (or URI), output stem and place in the listing; for
    a bag message, ``path`` is ``BAG#TOPIC/INDEX`` (the record's ``input``), ``bag`` the
    bag, ``message`` its index, ``timestamp`` and ``rank`` where it is in the bag."""

    index: int
    path: str
    stem: str
    bag: str | None = None
    message: int | None = None
    timestamp: int | None = None
    rank: int = 0


@dataclass(frozen=True)
class BatchResult:
    """What a job did: the table written, counts, and the sizing used."""

    table: Path
    rows: list[dict[str, Any]]
    segmented: int
    earlier: int
    failed: int
    problems: list[tuple[str, str]]
    workers: int
    threads: int
    seconds: float
    other_settings: int = 0  # frames done earlier under another model or mask options, segmented again

    @property
    def frames_per_second(self) -> float:
        """Frames segmented now per wall second of the Ray part of the job."""
        return self.segmented / self.seconds if self.seconds > 0 else 0.0


def is_uri(path: str) -> bool:
    """Whether ``path`` names a file through a filesystem other than the local one."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


def list_frames(
    sources: Sequence[str], source: SourceOptions | None = None
) -> tuple[list[Frame], list[tuple[str, str]]]:
    """The frames named by ``sources``, in order, each with the output stem ``marsedge-run``
    gives it, and the sources that yield nothing (source, why).

    A local folder, glob or image file is expanded as ``marsedge-run`` expands it; a
    local file that is not a PNG/JPEG is a list of paths, one per line (blank lines and
    ``#`` comments skipped, relative paths relative to the working directory); a bag gives
    one frame per image message of ``source.topic`` (its only image topic by default),
    named by header stamp; a URI
    (``s3://bucket/frames/``, ``gs://...``) is listed with pyarrow's filesystems.
    """
    options = source or SourceOptions()
    names: list[str] = []
    problems: list[tuple[str, str]] = []
    for source in sources:
        if is_uri(source):
            try:
                found = _list_uri(source)
            except (OSError, ValueError) as exc:
                problems.append((source, f"cannot list: {' '.join(str(exc).split())}"))
                continue
            if not found:
                problems.append((source, "no PNG or JPEG images here"))
            names.extend(found)
        elif os.path.isfile(source) and Path(source).suffix.lower() not in FRAME_SUFFIXES and not is_bag(source):
            try:
                listed = _read_list(Path(source))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append((source, f"cannot read the list of paths: {getattr(exc, 'strerror', None) or exc}"))
                continue
            if not listed:
                problems.append((source, "the list of paths is empty"))
            names.extend(listed)
        else:
            paths, bad = expand_inputs([source])
            problems.extend((p.source, p.message) for p in bad)
            names.extend(str(p) for p in paths)
    frames: list[Frame] = []
    used: set[str] = set()
    seen: set[str] = set()
    for name in names:
        key = name if is_uri(name) else os.path.realpath(name)
        if key in seen:
            continue
        seen.add(key)
        if not is_uri(name) and is_bag(name):
            problems.extend(_add_bag_frames(name, options.topic, frames, used))
            continue
        stem = output_stem(Path(name.split("://", 1)[-1]), used)
        frames.append(Frame(len(frames), name, stem))
    return frames, problems


def _add_bag_frames(bag: str, topic: str | None, frames: list[Frame], used: set[str]) -> list[tuple[str, str]]:
    """Appends a frame per image message of ``topic`` in ``bag``; the problem if none."""
    from marsedge.edge_runtime.sources.rosbag import list_messages

    try:
        topic, messages = list_messages(bag, topic)
    except ImageError as exc:
        return [(bag, str(exc))]
    for message in messages:
        stem = unique_name(message.stem, used)
        used.add(stem)
        name = f"{bag}#{topic}/{message.index}"
        frames.append(Frame(len(frames), name, stem, bag, message.index, message.timestamp, message.rank))
    return [] if messages else [(bag, f"no messages on {topic}")]


DONE, TODO, OTHER_SETTINGS = "done", "todo", "other settings"


def frame_state(
    frame: Frame,
    out: Path,
    overlay: bool,
    settings: dict[str, Any] | None = None,
    confidence: bool = False,
    band: int | None = None,
) -> str:
    """``"done"`` when ``frame``'s outputs in ``out`` are all there and its record names it:
    the JSON record (written last) parses, names this input, and is not older than a local
    frame; the mask (and the overlay and confidence map, when asked for) exist. With
    ``settings`` (:meth:`Segmenter.mask_settings`), the record must also hold the same
    ones, else ``"other settings"`` (segmented with another model or mask options); with
    ``band``, a multi-band PDS product's record must name the same band (1 when None).
    Otherwise ``"todo"``."""
    record_path = out / f"{frame.stem}.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("input") != frame.path or not (out / f"{frame.stem}_mask.png").is_file():
            return TODO
        local = frame.bag or frame.path
        if not is_uri(local) and os.stat(local).st_mtime_ns > record_path.stat().st_mtime_ns:
            return TODO  # the frame changed since it was segmented
        if settings is not None and record.get("mask_settings") != settings:
            return OTHER_SETTINGS
        identity = record.get("source") or {}
        if identity.get("bands", 1) > 1 and identity.get("band") != (band or 1):
            return OTHER_SETTINGS  # another band of the product
        if overlay and not (out / f"{frame.stem}_overlay.png").is_file():
            return TODO
        if confidence and not (out / f"{frame.stem}_confidence.png").is_file():
            return TODO
    except (OSError, ValueError, AttributeError, TypeError):
        return TODO
    return DONE


def is_complete(
    frame: Frame,
    out: Path,
    overlay: bool,
    settings: dict[str, Any] | None = None,
    confidence: bool = False,
    band: int | None = None,
) -> bool:
    """Whether ``frame`` is done in ``out`` (:func:`frame_state`)."""
    return frame_state(frame, out, overlay, settings, confidence, band) == DONE


def run_batch(options: BatchOptions, progress: Progress | None = None) -> BatchResult:
    """Segments every frame of ``options.sources`` not already done into ``options.out``
    on a Ray instance, and writes the Parquet table of results.

    Raises:
        MissingExtraError: Ray is not installed.
        ModelError: the model cannot be used (checked here before any worker starts).
        DataError: no frames to segment.
        MarsEdgeError: the Ray instance cannot be reached, or the job failed (outputs
            written so far are kept: a rerun finishes the rest).
        OSError: the output directory or the table cannot be written.
    """
    frames, problems = list_frames(options.sources, options.source)
    if not frames:
        detail = "; ".join(f"{s}: {m}" for s, m in problems) or "no sources given"
        raise DataError(f"no frames to segment ({detail})")
    # Check the model (and the resize options) here, once, before Ray starts anything.
    checker = Segmenter.from_options(replace(options.segmenter, threads=1))
    class_names = [c.name for c in checker.classes]
    settings = checker.mask_settings()
    model_bytes = checker.model_path.read_bytes()
    # a partner for degraded frames travels with the model; without one here, no worker routes
    route = checker.model_info["degraded_route"]
    partner = [route["model"], route["sha256"], route["path"], Path(route["path"]).read_bytes()] if route else None
    options = replace(options, segmenter=replace(options.segmenter, route_degraded=route is not None))
    del checker
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    _probe_writable(out)

    states = {
        f.index: frame_state(f, out, options.overlay, settings, options.confidence, options.source.band) for f in frames
    }
    todo = [f for f in frames if states[f.index] != DONE]
    other_settings = sum(1 for state in states.values() if state == OTHER_SETTINGS)
    pending = {f.index for f in todo}
    earlier = [f for f in frames if f.index not in pending]
    rows: dict[int, dict[str, Any]] = {f.index: _earlier_row(f, out, class_names) for f in earlier}
    report = progress or (lambda done, total, message: None)
    workers = threads = 0
    seconds = 0.0
    if todo:
        ray = connect(options.address, what="marsedge batch")
        workers, threads = sizing(cluster_cpus(ray), options.workers, options.threads)
        log.info(
            "%d frames (%d done earlier) on %d worker(s) x %d thread(s)", len(todo), len(earlier), workers, threads
        )
        start = time.perf_counter()
        for row in _segment_on_ray(ray, todo, options, workers, threads, class_names, model_bytes, partner, report):
            rows[row["index"]] = row
        seconds = time.perf_counter() - start
    report(len(todo), len(todo), "done")
    ordered = [rows[f.index] for f in frames]
    table = out / TABLE_NAME
    write_table(table, ordered, class_names)
    if options.bag_out is not None:
        written = write_mask_bag(options.bag_out, frames, ordered, out)
        if written is not None:
            log.info("wrote %s", written)
    counts = {status: sum(1 for r in ordered if r["status"] == status) for status in (SEGMENTED, EARLIER, FAILED)}
    return BatchResult(
        table, ordered, counts[SEGMENTED], counts[EARLIER], counts[FAILED], problems, workers, threads, seconds,
        other_settings,
    )  # fmt: skip


def _segment_on_ray(
    ray: Any,
    todo: list[Frame],
    options: BatchOptions,
    workers: int,
    threads: int,
    class_names: list[str],
    model_bytes: bytes,
    partner: list[Any] | None,
    report: Progress,
):
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    context = ray.data.DataContext.get_current()
    quiet_ray_loggers()  # Ray Data sets its loggers' level on import
    context.enable_progress_bars = False  # the driver shows its own, per frame
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    batch = max(1, options.batch_size)
    # Blocks of a few batches: enough of them to keep every actor busy and to show progress.
    per_block = max(batch, min(batch * 16, math.ceil(len(todo) / (workers * 4))))
    items = [
        {
            "index": f.index,
            "path": f.path,
            "stem": f.stem,
            "bag": f.bag or "",
            "message": -1 if f.message is None else f.message,
            "timestamp": f.timestamp or 0,
            "rank": f.rank,
        }
        for f in todo
    ]
    dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(todo) / per_block)).map_batches(
        SegmentFrames,
        batch_size=batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,
        fn_constructor_kwargs={
            "options": replace(options.segmenter, threads=threads),
            # a reference, fetched only by an actor whose machine lacks the model file
            "model": [model_sha256, ray.put(model_bytes), partner and [*partner[:3], ray.put(partner[3])]],
            "out": str(options.out),
            "overlay": options.overlay,
            "max_pixels": options.max_pixels,
            "class_names": class_names,
            "confidence": options.confidence,
            "source": options.source,
        },
    )
    done = 0
    report(0, len(todo), f"{workers} worker(s) x {threads} thread(s)")
    try:
        for part in dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
            rows = part.to_pylist()
            for row in rows:
                done += 1
                yield row
            if rows:
                report(done, len(todo), rows[-1]["path"])
    except Exception as exc:  # a lost actor or node beyond Ray's retries; outputs so far are kept
        if isinstance(exc, MarsEdgeError):
            raise
        message = " ".join(str(exc).split())[:400]
        raise MarsEdgeError(
            f"the Ray job stopped after {done} of {len(todo)} frames ({type(exc).__name__}: {message}); "
            "run the same command again to finish the rest"
        ) from None


class SegmentFrames:
    """The callable class ``map_batches`` runs in each actor: one Segmenter per actor,
    ``segment_file`` per frame, a result row per frame."""

    def __init__(
        self,
        options: SegmenterOptions,
        model: list[Any],
        out: str,
        overlay: bool,
        max_pixels: int | None,
        class_names: list[str],
        confidence: bool = False,
        source: SourceOptions | None = None,
    ) -> None:
        sha256, content, *partner = model
        local = _local_model(options.model, sha256, content, partner[0] if partner else None)
        self.segmenter = Segmenter.from_options(replace(options, model=local))
        if options.model is not None:  # records name the model as the job gave it, not a worker's copy
            self.segmenter.model_info["path"] = str(options.model)
        if partner and self.segmenter.model_info["degraded_route"]:
            self.segmenter.model_info["degraded_route"]["path"] = partner[0][2]
        self.out = Path(out)
        self.overlay = overlay
        self.max_pixels = max_pixels
        self.class_names = class_names
        self.confidence = confidence
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.sha256 = self.segmenter.model_info["sha256"]
        self.source = source or SourceOptions()
        self.bags: dict[str, Any] = {}  # bag path -> BagMessages held open

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        columns = {name: batch.column(name).to_pylist() for name in batch.column_names}
        rows = []
        for i, (index, path, stem) in enumerate(zip(columns["index"], columns["path"], columns["stem"])):
            bag = columns.get("bag", [""] * len(columns["index"]))[i]
            if bag:
                where = Frame(int(index), str(path), str(stem), str(bag), int(columns["message"][i]),
                              int(columns["timestamp"][i]), int(columns["rank"][i]))  # fmt: skip
                rows.append(self.one_message(where))
            else:
                rows.append(self.one(int(index), str(path), str(stem)))
        return pa.Table.from_pylist(rows, schema=result_schema(self.class_names))

    def one(self, index: int, path: str, stem: str) -> dict[str, Any]:
        """Segments one frame into its outputs; a result row, with the error if any."""
        row = self._row(index, path, stem)

        def segment() -> dict[str, Any]:
            data = _read_uri(path) if is_uri(path) else None
            return segment_file(
                self.segmenter,
                Path(path),
                self.out,
                stem,
                self.overlay,
                self.max_pixels,
                data,
                self.source,
                self.confidence,
            )

        return self._finish(row, segment)

    def one_message(self, frame: Frame) -> dict[str, Any]:
        """Segments one bag message into its outputs (as ``marsedge-run`` does); a result row."""
        from marsedge.edge_runtime.sources.rosbag import BagMessage, BagMessages

        row = self._row(frame.index, frame.path, frame.stem)

        def segment() -> dict[str, Any]:
            bag = self.bags.get(frame.bag or "")
            if bag is None:
                bag = self.bags[frame.bag or ""] = BagMessages(frame.bag or "", self.source.topic)
            message = BagMessage(frame.message or 0, frame.stem, frame.timestamp or 0, frame.rank)
            read = bag.read(message, self.max_pixels, self.segmenter.work_pixels)
            if read.levels is None:
                raise ImageError(f"message {read.index}: {read.error}")
            tick = time.perf_counter()
            gray, depth = frame_gray(self.segmenter, read.levels)
            load_ms = read.load_ms + (time.perf_counter() - tick) * 1e3  # reading includes the bit depth
            result = self.segmenter.segment(gray)
            return write_outputs(
                self.segmenter, gray, result, frame.path, self.out, frame.stem, self.overlay, load_ms,
                read.identity, self.confidence, depth,
            )  # fmt: skip

        return self._finish(row, segment)

    def _row(self, index: int, path: str, stem: str) -> dict[str, Any]:
        """An empty result row that names this worker, the model and the mask options."""
        row = _empty_row(index, path, stem, self.class_names)
        row.update(worker=self.worker, **_settings_row(self.segmenter.model_info, self.segmenter.mask_settings()))
        return row

    def _finish(self, row: dict[str, Any], segment: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``row`` with the record ``segment()`` writes, or the error that stopped it."""
        try:
            record = segment()
        except ImageError as exc:
            row.update(status=FAILED, error=str(exc))
        except OSError as exc:
            row.update(status=FAILED, error=f"cannot write outputs to {self.out}: {exc.strerror or exc}")
        except Exception as exc:  # never a failed job for one bad frame or message
            row.update(status=FAILED, error=f"unexpected {type(exc).__name__}: {exc}")
        else:
            row.update(_record_row(record, self.class_names), status=SEGMENTED)
        return row


def write_mask_bag(path: Path, frames: Sequence[Frame], rows: Sequence[dict[str, Any]], out: Path) -> Path | None:
    """Writes the masks of the bag frames segmented (now or earlier) into a new bag at
    ``path``, in listing order, each with its message's header (``marsedge-run --bag-out``).
    None when no bag frame has a mask.

    Raises:
        ImageError: ``path`` exists, or ``rosbags`` is missing.
        OSError: a mask or record cannot be read, or the bag cannot be written.
    """
    import numpy as np
    from PIL import Image

    from marsedge.edge_runtime.sources.rosbag import BagFrame, MaskBagWriter, uses_mcap

    done = [(f, r) for f, r in zip(frames, rows) if f.bag and r["status"] in (SEGMENTED, EARLIER)]
    if not done:
        return None
    writer = MaskBagWriter(path, mcap=uses_mcap(done[0][0].bag or ""))
    try:
        for frame, _ in done:
            record = json.loads((out / f"{frame.stem}.json").read_text(encoding="utf-8"))
            with Image.open(out / f"{frame.stem}_mask.png") as image:
                mask = np.asarray(image)
            writer.add(BagFrame(frame.message or 0, frame.stem, None, record.get("source", {})), mask)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def result_schema(class_names: Sequence[str]) -> Any:
    """The Parquet table's columns: one row per frame."""
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("path", pa.string()),
            ("stem", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("tiles", pa.int64()),
            ("scale", pa.float64()),
            *[(f"fraction_{name}", pa.float64()) for name in class_names],
            *[(f"{stage}_ms", pa.float64()) for stage in STAGES],
            ("bit_depth", pa.int64()),
            ("bit_depth_from", pa.string()),
            ("mean_confidence", pa.float64()),
            ("below_threshold", pa.float64()),
            ("ignored_fraction", pa.float64()),
            ("noise", pa.float64()),
            ("sharpness", pa.float64()),
            ("degraded", pa.bool_()),
            ("mask", pa.string()),
            ("overlay", pa.string()),
            ("confidence", pa.string()),
            ("record", pa.string()),
            # what decided the mask: the model and every option that changes one
            ("model", pa.string()),
            ("model_name", pa.string()),
            ("model_sha256", pa.string()),
            ("option_tile_overlap", pa.int64()),
            ("option_tta", pa.bool_()),
            ("option_reference_kernels", pa.bool_()),
            ("option_frame_width", pa.float64()),
            ("option_scale", pa.float64()),
            ("option_bit_depth", pa.string()),
            ("option_min_confidence", pa.float64()),
            ("option_ignore_mask_sha256", pa.string()),
            ("option_route_sha256", pa.string()),
            ("worker", pa.string()),
            *[(name, kind) for name, kind in _identity_columns(pa)],
        ]
    )


def _identity_columns(pa: Any) -> list[tuple[str, Any]]:
    """The frame's identity: a PDS product's label fields, a bag message's topic and header."""
    return [
        ("product_id", pa.string()),
        ("instrument_id", pa.string()),
        ("sol", pa.int64()),
        ("spacecraft_clock_start", pa.string()),
        ("topic", pa.string()),
        ("message", pa.int64()),
        ("stamp", pa.string()),
        ("frame_id", pa.string()),
    ]


def write_table(path: Path, rows: list[dict[str, Any]], class_names: Sequence[str]) -> None:
    """Writes the rows as one Parquet file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=result_schema(class_names))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_atomic(path, buffer.getvalue())


def _empty_row(index: int, path: str, stem: str, class_names: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in result_schema(class_names).names}
    row.update(index=index, path=path, stem=stem)
    return row


def _record_row(record: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """The table columns of a ``segment_file`` JSON record."""
    latency = record.get("latency_ms", {})
    outputs = record.get("outputs", {})
    certainty = record.get("confidence") or {}
    return {
        "width": record["size"]["width"],
        "height": record["size"]["height"],
        "tiles": record.get("tiles"),
        "scale": record.get("scale"),
        **{f"fraction_{name}": record["class_fractions"].get(name) for name in class_names},
        **{f"{stage}_ms": latency.get(stage) for stage in STAGES},
        "bit_depth": record.get("bit_depth"),
        "bit_depth_from": record.get("bit_depth_from"),
        "mean_confidence": certainty.get("mean"),
        "below_threshold": certainty.get("below_threshold"),
        "ignored_fraction": record.get("ignored_fraction"),
        "noise": (record.get("quality") or {}).get("noise"),
        "sharpness": (record.get("quality") or {}).get("sharpness"),
        "degraded": record.get("degraded"),
        "mask": outputs.get("mask"),
        "overlay": outputs.get("overlay"),
        "confidence": outputs.get("confidence"),
        "record": outputs.get("json"),
        **_settings_row(record.get("model") or {}, record.get("mask_settings") or {}),
        **_identity_row(record.get("source") or {}),
    }


def _settings_row(model: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The table columns naming the model and the mask options of a record or a segmenter."""
    return {
        "model": model.get("path"),
        "model_name": model.get("model_name") or model.get("name"),
        "model_sha256": settings.get("model_sha256") or model.get("sha256"),
        **{f"option_{key}": settings.get(key) for key in ("tile_overlap", "tta", "reference_kernels")},
        **{f"option_{key}": settings.get(key) for key in ("frame_width", "scale", "min_confidence")},
        "option_bit_depth": None if settings.get("bit_depth") is None else str(settings["bit_depth"]),
        "option_ignore_mask_sha256": settings.get("ignore_mask_sha256"),
        "option_route_sha256": (settings.get("degraded_route") or {}).get("sha256"),
    }


def _identity_row(source: dict[str, Any]) -> dict[str, Any]:
    stamp = source.get("stamp")
    sol = source.get("sol")
    return {
        "product_id": _text(source.get("product_id")),
        "instrument_id": _text(source.get("instrument_id")),
        "sol": int(sol) if isinstance(sol, int) or (isinstance(sol, str) and sol.isdigit()) else None,
        "spacecraft_clock_start": _text(source.get("spacecraft_clock_start")),
        "topic": _text(source.get("topic")),
        "message": source.get("index") if isinstance(source.get("index"), int) else None,
        "stamp": f"{stamp['sec']}.{stamp['nanosec']:09d}" if isinstance(stamp, dict) else None,
        "frame_id": _text(source.get("frame_id")),
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _earlier_row(frame: Frame, out: Path, class_names: Sequence[str]) -> dict[str, Any]:
    row = _empty_row(frame.index, frame.path, frame.stem, class_names)
    try:
        record = json.loads((out / f"{frame.stem}.json").read_text(encoding="utf-8"))
        row.update(_record_row(record, class_names))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    row["status"] = EARLIER
    return row


def _local_model(
    model: str | os.PathLike[str] | None, digest: str, content: Any, partner: list[Any] | None = None
) -> Path:
    """The model file for an actor: the job's own path when this machine has it with the
    same content (sha256 ``digest``) and, for a model that routes degraded frames, its
    partner beside it; else a private copy of the bytes the driver sent (``content``: the
    bytes or a Ray object reference to them; ``partner``: [file name, its sha256, the
    driver's path, bytes or reference])."""
    path = model_path(model)  # a path, or a bundled model's name
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() == digest and (
            partner is None or hashlib.sha256((path.parent / partner[0]).read_bytes()).hexdigest() == partner[1]
        ):
            return path
    except OSError:
        pass
    folder = Path(tempfile.gettempdir()) / f"marsedge-model-{digest[:16]}"
    copy = folder / (path.name if path.suffix == ".tflite" else "model.tflite")
    for target, data in ((copy, content), *(((folder / partner[0], partner[3]),) if partner else ())):
        if not target.is_file():
            if not isinstance(data, bytes):
                import ray

                data = ray.get(data)
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
    return copy


def _list_uri(uri: str) -> list[str]:
    """Image files in a folder URI (not recursing), or the URI itself if it is a file."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(path)
    scheme = uri.split("://", 1)[0]
    if info.type == fs.FileType.File:
        return [uri]
    if info.type != fs.FileType.Directory:
        raise OSError("no such file or folder")
    entries = filesystem.get_file_info(fs.FileSelector(path, recursive=False))
    return sorted(
        f"{scheme}://{e.path}"
        for e in entries
        if e.type == fs.FileType.File and Path(e.path).suffix.lower() in IMAGE_SUFFIXES
    )


def _read_uri(uri: str) -> bytes:
    """A file's bytes through pyarrow's filesystems; a missing file is an ImageError."""
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as handle:
            return handle.read()
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read: {' '.join(str(exc).split())}") from None


def _read_list(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _probe_writable(directory: Path) -> None:
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".marsedge-probe-")
    os.close(fd)
    os.unlink(probe)


__all__ = [
    "BatchOptions",
    "BatchResult",
    "Frame",
    "LOCAL",
    "SegmentFrames",
    "TABLE_NAME",
    "frame_state",
    "is_complete",
    "list_frames",
    "require_ray",
    "result_schema",
    "run_batch",
]

"""``marsedge-run``: segment images on the rover board. Parses options, calls the library,
prints; the work is in :mod:`.batch`, :mod:`.watch` and :mod:`.segmenter`."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from marsedge.core.errors import one_line

from .batch import (
    expand_inputs,
    frame_gray,
    output_stem,
    segment_file,
    settings_digest,
    summary,
    unique_name,
    write_outputs,
)
from .cliutil import USAGE_EXIT_CODE, OneLineErrorsCommand
from .errors import ImageError, ModelError
from .imageio import DEFAULT_MAX_PIXELS
from .segmenter import DEFAULT_MODEL, DEFAULT_TILE_OVERLAP, Segmenter
from .sources import MissingReaderError, SourceOptions, is_bag
from .watch import DEFAULT_POLL_INTERVAL, JOURNAL_NAME, Journal, watch

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

_RESIZE = "Frames of other sizes and cameras"
_WATCH = "Watch a folder"
_ADVANCED = "Advanced"
_ARCHIVES = "PDS products and ROS bags"
_TRUST = "Confidence, hardware in view, bit depth"

BitDepth = Enum("BitDepth", {name: name for name in ("auto", "8", "10", "12", "16")}, type=str)
BIT_DEPTH_HELP = (
    "Significant bits of 16-bit frames; auto takes a PDS label's sample bits, else reads a frame whose maximum "
    "is <= 4095 as 12-bit (<= 1023: 10-bit) and says so once; a number overrides labels. 8-bit frames are read "
    "as they are."
)
IGNORE_MASK_HELP = (
    "PNG of the pixels that are not terrain (the rover's deck, mast, wheels in a fixed camera's view), any size "
    "(resized to each frame), non-zero = not terrain: class 0 in the mask, left out of the class shares."
)
MIN_CONFIDENCE_HELP = (
    "Paint pixels whose calibrated confidence is under C (0-1) as class 0 (unknown) and leave them out of the "
    "class shares."
)
NO_ROUTE_HELP = (
    "Run the model's own network on every frame. By default a model that names a partner for degraded frames "
    "(navcam: navcam-robust) segments each frame that measures blurred or noisy with it."
)


@app.command(cls=OneLineErrorsCommand)
def run(
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="INPUT",
            help="Image files, directories and globs (PNG/JPEG), PDS products (.IMG, .LBL, .xml) and ROS bags.",
        ),
    ] = None,
    model: Annotated[
        Optional[Path],
        typer.Option(
            help="marsedge .tflite model, or a bundled model's name: navcam (the default), navcam-robust (the most robust to noise and blur) or navcam-tiles (the tile model both started from)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory for <stem>_mask.png, <stem>_overlay.png, <stem>.json.")] = Path(
        "marsedge_out"
    ),
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON record per image on stdout.")] = False,
    threads: Annotated[
        Optional[int], typer.Option(min=1, help="Interpreter CPU threads; default: its own choice.")
    ] = None,
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Write the overlay PNG.")] = True,
    tile_overlap: Annotated[
        int,
        typer.Option(
            min=0,
            rich_help_panel=_ADVANCED,
            help="Pixels shared by neighbouring tiles of frames larger than the model input.",
        ),
    ] = DEFAULT_TILE_OVERLAP,
    reference_kernels: Annotated[
        bool,
        typer.Option(
            "--reference-kernels",
            rich_help_panel=_ADVANCED,
            help="Builtin reference kernels (no XNNPACK): slower, bit-identical across CPUs.",
        ),
    ] = False,
    tta: Annotated[
        bool, typer.Option("--tta", help="Also segment the mirrored image and average (twice the time).")
    ] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Also segment the images in subfolders of a directory INPUT.")
    ] = False,
    max_pixels: Annotated[
        int,
        typer.Option(
            min=0,
            rich_help_panel=_ADVANCED,
            help="Refuse images with more pixels, counted both as stored and as model input once resized and "
            "padded to whole tiles (decompression bombs); 0 = Pillow's limit only.",
        ),
    ] = DEFAULT_MAX_PIXELS,
    expect_int8: Annotated[
        bool,
        typer.Option(
            "--expect-int8",
            rich_help_panel=_ADVANCED,
            help="Refuse a model that is not integer-quantised (float32, float16, dynamic range).",
        ),
    ] = False,
    watch_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--watch",
            metavar="DIR",
            rich_help_panel=_WATCH,
            help="Segment frames as they arrive in DIR (once fully written), each once, also across restarts "
            f"(journal: OUT/{JOURNAL_NAME}), until SIGINT or SIGTERM.",
        ),
    ] = None,
    poll_interval: Annotated[
        float,
        typer.Option(min=0.01, rich_help_panel=_WATCH, help="Seconds between two looks at the --watch directory."),
    ] = DEFAULT_POLL_INTERVAL,
    frame_width: Annotated[
        Optional[float],
        typer.Option(
            metavar="PX",
            rich_help_panel=_RESIZE,
            help="Each input is a crop or tile of a whole frame PX pixels wide (resize: the model's "
            "model_pixels_per_frame / PX). Default: each input is a whole frame, resized by its longer side.",
        ),
    ] = None,
    scale: Annotated[
        Optional[float],
        typer.Option(
            metavar="S",
            rich_help_panel=_RESIZE,
            help="Resize every input by S model pixels per input pixel (another camera: match the metres per "
            "model pixel of the training frames). Not with --frame-width.",
        ),
    ] = None,
    topic: Annotated[
        Optional[str],
        typer.Option(
            metavar="TOPIC",
            rich_help_panel=_ARCHIVES,
            help="The image topic of a bag INPUT (sensor_msgs/Image or CompressedImage); default: its only one.",
        ),
    ] = None,
    bag_out: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR",
            rich_help_panel=_ARCHIVES,
            help="Also write a new bag DIR: per message, a mono8 mask on TOPIC/marsedge/mask with the same header.",
        ),
    ] = None,
    band: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            metavar="N",
            rich_help_panel=_ARCHIVES,
            help="Band N (from 1) of multi-band PDS products; default: 1.",
        ),
    ] = None,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence",
            rich_help_panel=_TRUST,
            help="Also write <stem>_confidence.png: each pixel's calibrated confidence (255 = 1.0).",
        ),
    ] = False,
    min_confidence: Annotated[
        Optional[float], typer.Option(metavar="C", min=0.0, max=1.0, rich_help_panel=_TRUST, help=MIN_CONFIDENCE_HELP)
    ] = None,
    ignore_mask: Annotated[
        Optional[Path], typer.Option(metavar="PNG", rich_help_panel=_TRUST, help=IGNORE_MASK_HELP)
    ] = None,
    bit_depth: Annotated[BitDepth, typer.Option(rich_help_panel=_TRUST, help=BIT_DEPTH_HELP)] = BitDepth.auto,
    no_route: Annotated[bool, typer.Option("--no-route", rich_help_panel=_TRUST, help=NO_ROUTE_HELP)] = False,
) -> None:
    """Segment Mars terrain images into soil, bedrock, sand and big rock.

    With --watch DIR, segment frames as they arrive in DIR until SIGINT or SIGTERM.
    """
    if watch_dir is not None and inputs:
        _fail("give INPUTs or --watch DIR, not both", USAGE_EXIT_CODE)
    if watch_dir is None and not inputs:
        _fail("nothing to segment: give INPUT files, directories or globs, or --watch DIR", USAGE_EXIT_CODE)
    if watch_dir is not None and not watch_dir.is_dir():
        _fail(f"{_shown(watch_dir)}: --watch needs an existing directory")
    if frame_width is not None and scale is not None:
        _fail("give --frame-width or --scale, not both", USAGE_EXIT_CODE)
    if bag_out is not None and watch_dir is not None:
        _fail("--bag-out needs bag INPUTs, not --watch", USAGE_EXIT_CODE)
    if bag_out is not None and os.path.lexists(bag_out):
        _fail(f"{_shown(bag_out)}: exists already: give --bag-out a new directory", USAGE_EXIT_CODE)
    source = SourceOptions(band=band, topic=topic)
    try:
        segmenter = Segmenter(
            model, threads, reference_kernels, tile_overlap, tta, expect_int8, frame_width, scale,
            bit_depth.value, ignore_mask, min_confidence, not no_route,
        )  # fmt: skip
    except ModelError as exc:
        _fail(f"{_shown(model or DEFAULT_MODEL)}: {exc}")
    except ImageError as exc:  # the ignore mask
        _fail(f"{_shown(ignore_mask or '')}: --ignore-mask: {str(exc).removeprefix('ignore mask: ')}")
    except ValueError as exc:
        option = next((o for o in ("frame_width", "scale") if str(exc).startswith(o)), None)
        if option:  # a resize override the model cannot take: a usage error
            _fail(f"--{option.replace('_', '-')}: {exc}", USAGE_EXIT_CODE)
        _fail(str(exc))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"{_shown(out)}: cannot create output directory: {exc.strerror or exc}")
    try:
        _probe_writable(out)
    except OSError as exc:
        _fail(f"{_shown(out)}: output directory is not writable: {exc.strerror or exc}")

    class_names = {c.id: c.name for c in segmenter.classes}
    names = [class_names[k] for k in segmenter.metadata["output_classes"]]
    report = _Report(names, json_lines)
    if watch_dir is not None:
        _watch(segmenter, watch_dir, out, overlay, max_pixels or None, poll_interval, report, source, confidence)
        return

    paths, problems = expand_inputs(inputs or [], recursive)
    for problem in problems:
        if problem.notice:
            report.notice(problem.source, problem.message)
        else:
            report.failure(problem.source, problem.message)
    if bag_out is not None and not any(is_bag(path) for path in paths):
        _fail("--bag-out needs a bag INPUT (a rosbag2 directory, .mcap, .db3 or .bag)", USAGE_EXIT_CODE)
    report.header()
    used_stems: set[str] = set()
    bags = _BagOutput(bag_out, next((p for p in paths if is_bag(p)), None))
    try:
        for path in paths:
            if is_bag(path):
                _segment_bag(
                    segmenter, path, out, overlay, max_pixels or None, source, used_stems, report, bags, confidence
                )
                continue
            try:
                record = segment_file(
                    segmenter,
                    path,
                    out,
                    output_stem(path, used_stems),
                    overlay,
                    max_pixels or None,
                    None,
                    source,
                    confidence,
                )
            except MissingReaderError as exc:
                report.missing_extra(path, exc)
                continue
            except ImageError as exc:
                report.failure(path, str(exc))
                continue
            except OSError as exc:
                report.failure(path, f"cannot write outputs to {_shown(out)}: {exc.strerror or exc}")
                continue
            except Exception as exc:  # never a traceback for one bad image; the batch goes on
                report.failure(path, f"unexpected {type(exc).__name__}: {exc}")
                continue
            report.segmented(path, record)
    except KeyboardInterrupt:
        bags.abort()
        report.summary("interrupted: ")
        raise typer.Exit(130) from None
    bags.close(report)
    report.summary()
    if report.failures:
        raise typer.Exit(1)


def _segment_bag(
    segmenter: Segmenter,
    path: Path,
    out: Path,
    overlay: bool,
    max_pixels: int | None,
    source: SourceOptions,
    used_stems: set[str],
    report: _Report,
    bags: _BagOutput,
    confidence: bool = False,
) -> None:
    """Segments every image message of ``source.topic`` in one bag; a bad message is one
    line naming it, and the next message follows."""
    from .sources.rosbag import read_bag

    try:
        for frame in read_bag(path, source.topic, max_pixels, segmenter.work_pixels):
            where = f"{_shown(path)}: message {frame.index}"
            if frame.levels is None:
                report.failure(where, frame.error or "cannot read")
                continue
            try:
                tick = time.perf_counter()
                gray, depth = frame_gray(segmenter, frame.levels)
                load_ms = frame.load_ms + (time.perf_counter() - tick) * 1e3  # reading includes the bit depth
                result = segmenter.segment(gray)
                stem = unique_name(frame.stem, used_stems)
                used_stems.add(stem)
                name = f"{path}#{frame.identity['topic']}/{frame.index}"
                record = write_outputs(
                    segmenter, gray, result, name, out, stem, overlay, load_ms, frame.identity, confidence, depth
                )
                bags.add(frame, result.mask, report)
            except ImageError as exc:
                report.failure(where, str(exc))
                continue
            except OSError as exc:
                report.failure(where, f"cannot write outputs to {_shown(out)}: {exc.strerror or exc}")
                continue
            except Exception as exc:  # never a traceback for one bad message; the bag goes on
                report.failure(where, f"unexpected {type(exc).__name__}: {exc}")
                continue
            report.segmented(name, record)
    except MissingReaderError as exc:
        report.missing_extra(path, exc)
    except ImageError as exc:  # the bag cannot be opened, or has no such topic
        report.failure(path, str(exc))


class _BagOutput:
    """``--bag-out``: the bag of masks, opened at the first segmented message."""

    def __init__(self, path: Path | None, first_bag: Path | None) -> None:
        self.path = path
        self.first_bag = first_bag
        self.writer = None
        self.failed = False

    def add(self, frame, mask, report: _Report) -> None:
        if self.path is None or self.failed:
            return
        from .sources.rosbag import MaskBagWriter, uses_mcap

        try:
            if self.writer is None:
                self.writer = MaskBagWriter(self.path, mcap=uses_mcap(self.first_bag or ""))
            self.writer.add(frame, mask)
        except (ImageError, OSError) as exc:
            self.failed = True
            report.failure(self.path, f"cannot write the bag of masks: {getattr(exc, 'strerror', None) or exc}")
        except Exception as exc:
            self.failed = True
            report.failure(self.path, f"cannot write the bag of masks: {type(exc).__name__}: {exc}")

    def close(self, report: _Report) -> None:
        if self.writer is None:
            return
        if self.failed:
            self.writer.abort()
            return
        try:
            written = self.writer.close()
        except Exception as exc:
            self.writer.abort()
            report.failure(self.path or "", f"cannot write the bag of masks: {type(exc).__name__}: {exc}")
            return
        report.notice(written, f"bag of {self.writer.count} mask(s) written")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _watch(
    segmenter: Segmenter,
    directory: Path,
    out: Path,
    overlay: bool,
    max_pixels: int | None,
    poll_interval: float,
    report: _Report,
    source: SourceOptions | None = None,
    confidence: bool = False,
) -> None:
    """Runs watch mode until SIGINT/SIGTERM; a second signal stops at once."""
    try:
        journal = Journal.open(out / JOURNAL_NAME)
    except OSError as exc:
        _fail(f"{_shown(out / JOURNAL_NAME)}: cannot use the watch journal: {exc.strerror or exc}")
    stale = journal.other_settings(settings_digest(segmenter.mask_settings()))
    if stale:
        report.notice(
            journal.path, f"{stale} frame(s) were handled with another model or options: segmenting them again"
        )
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, previous[signum])  # a second signal acts at once

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    report.header()
    recovered = 0
    try:
        for event in watch(
            segmenter, directory, out, stop, poll_interval, overlay, max_pixels, journal, source, confidence
        ):
            if event.kind == "segmented":
                report.segmented(event.path, event.record or {})
            elif event.kind == "recovered":
                recovered += 1
            else:
                report.failure(event.path, event.message)
    except KeyboardInterrupt:
        stopped_by.append("second SIGINT")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    done = sum(1 for e in journal.entries.values() if e.get("status") == "done")
    report.summary(
        f"watch stopped ({', '.join(stopped_by) or 'end'}): ",
        f"; {recovered} recovered; journal {_shown(journal.path)} lists {done} segmented frames",
    )


class _Report:
    """What the CLI prints: a table row or JSON line per image, one line per failure, a summary."""

    def __init__(self, class_names: list[str], json_lines: bool) -> None:
        self.class_names = class_names
        self.json_lines = json_lines
        self.latencies: list[float] = []
        self.failures = 0
        self.missing_extras: set[str] = set()
        self.depths_told: set[int] = set()

    def header(self) -> None:
        if not self.json_lines:
            print(_row("size", "tiles", "ms", self.class_names, "image"), flush=True)

    def segmented(self, path: Path, record: dict) -> None:
        self.latencies.append(record["latency_ms"]["total"])
        self.bit_depth_notice(path, record)
        if self.json_lines:
            print(json.dumps(record), flush=True)
        else:
            size = f"{record['size']['width']}x{record['size']['height']}"
            shares = [f"{100 * record['class_fractions'][n]:.1f}%" for n in self.class_names]
            ms = f"{record['latency_ms']['total']:.1f}"
            print(_row(size, str(record["tiles"]), ms, shares, _shown(path)), flush=True)

    def bit_depth_notice(self, path: Path, record: dict) -> None:
        """Once per run and depth: 16-bit frames auto-read as 10- or 12-bit (not when a PDS
        label declared the bits)."""
        depth = record.get("bit_depth")
        settings = record.get("mask_settings") or {}
        from_label = record.get("bit_depth_from") == "label"  # the label declared it: nothing guessed
        if (
            settings.get("bit_depth") == "auto"
            and depth in (10, 12)
            and not from_label
            and depth not in self.depths_told
        ):
            self.depths_told.add(depth)
            self.notice(
                path,
                f"16-bit frames with no value above {(1 << depth) - 1} are read as {depth}-bit "
                "(this one and any others; --bit-depth 16 reads them as full 16-bit)",
            )

    def failure(self, source: str | Path, message: str) -> None:
        self.failures += 1
        _error(f"{_shown(source)}: {message}")

    def missing_extra(self, source: str | Path, exc: MissingReaderError) -> None:
        """A frame whose reader is not installed: the first says which extra to install,
        the others count as failures without repeating it."""
        if exc.extra in self.missing_extras:
            self.failures += 1
            return
        self.missing_extras.add(exc.extra)
        self.failure(source, str(exc))

    def notice(self, source: str | Path, message: str) -> None:
        print(f"note: {_shown(source)}: {message}", file=sys.stderr, flush=True)

    def summary(self, prefix: str = "", suffix: str = "") -> None:
        line = prefix + summary(self.latencies, self.failures) + suffix
        print(line, file=sys.stderr if self.json_lines else sys.stdout)


def main() -> None:
    """Console entry point of ``marsedge-run``."""
    app()


def _row(size: str, tiles: str, ms: str, classes: list[str], image: str) -> str:
    return f"{size:>9} {tiles:>5} {ms:>8} " + " ".join(f"{c:>9}" for c in classes) + f"  {image}"


def _error(message: str) -> None:
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def _shown(path: str | os.PathLike[str]) -> str:
    """A path as one printable line: bytes that are not UTF-8 and control characters
    (a newline in a file name) are shown escaped, so every message stays one line and
    printing never fails."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _probe_writable(directory: Path) -> None:
    """Creates and removes a file in ``directory`` (a read-only mount fails here, once,
    instead of once per image)."""
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".marsedge-probe-")
    os.close(fd)
    os.unlink(probe)


def _fail(message: str, code: int = 1) -> NoReturn:
    """One ``error:`` line; exit 1 (data, model, I/O) unless told 2 (usage)."""
    _error(message)
    raise typer.Exit(code)


if __name__ == "__main__":
    main()

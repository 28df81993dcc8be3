"""Watch mode: segment frames as they arrive in a directory, each frame exactly once.

A frame is taken once it is complete: a regular, non-hidden PNG/JPEG file or PDS product
(an ``.IMG`` with an attached label, a ``.LBL`` or PDS4 ``.xml`` label) whose size and
modification time did not change between two polls. A writer that renames a finished
file into place (writes ``.f.png`` or ``f.png.part``, then renames it to ``f.png``) is
picked up right away on the next polls; the stability rule covers writers that write in
place.

What was handled is kept in a journal, ``marsedge-watch.jsonl`` in the output
directory: one JSON line per frame (path, size, mtime, outcome, output stem), appended
and fsynced once the frame's outputs are in place, and rewritten atomically (compacted)
at start. A frame whose path, size and mtime are in the journal is never processed
again, across restarts, under the same model and mask options (each entry keeps a digest
of :meth:`.Segmenter.mask_settings`: a watch restarted with another model or option
segments the frames again); a frame that changes (new size or mtime) is a new frame and
replaces its old outputs. A process killed between a frame's outputs and its journal
line leaves the frame's JSON record (same input, newer than the frame): the next start
journals it without segmenting it again.

Bad frames are journaled as failed and not retried until they change; frames whose
outputs could not be written (disk full, read-only) are not journaled and are retried on
later polls.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import segment_file, settings_digest, unique_stem
from .errors import ImageError
from .imageio import DEFAULT_MAX_PIXELS, write_atomic
from .segmenter import Segmenter
from .sources import FRAME_SUFFIXES, SourceOptions
from .sources.pds import is_product_file

logger = logging.getLogger(__name__)

JOURNAL_NAME = "marsedge-watch.jsonl"
DEFAULT_POLL_INTERVAL = 1.0
_ENTRY_TYPES = (("path", str), ("size", int), ("mtime_ns", int), ("stem", str))
WRITE_RETRY_S = 10.0  # after a failed write (disk full), wait this long before retrying


@dataclass(frozen=True)
class FrameKey:
    """A frame version: its path (real directory + name), size in bytes and mtime in ns."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class WatchEvent:
    """Something that happened to one frame (or the watched directory).

    Attributes:
        kind: ``"segmented"`` (``record`` holds the JSON record), ``"failed"`` (a bad
            frame, journaled), ``"write_failed"`` (outputs not written, retried later),
            ``"recovered"`` (segmented before a crash, now journaled) or ``"error"``
            (the directory cannot be listed; the watch goes on).
        path: the frame (or directory).
        message: why, for failures and errors.
        record: the JSON record of a segmented frame.
    """

    kind: str
    path: Path
    message: str = ""
    record: dict[str, Any] | None = None


@dataclass
class Journal:
    """Frames a watch has handled, one JSON line each in ``path`` (see module docs)."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_lines: int = 0

    @classmethod
    def open(cls, path: Path) -> Journal:
        """Reads the journal (skipping a torn last line left by a crash) and rewrites it
        compacted, atomically.

        Raises:
            OSError: the journal cannot be read or rewritten.
        """
        journal = cls(Path(path))
        if journal.path.exists():
            for line in journal.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    valid = all(isinstance(entry[k], t) for k, t in _ENTRY_TYPES)
                except (ValueError, KeyError, TypeError):
                    valid = False
                if valid:
                    journal.entries[entry["path"]] = entry
                else:
                    journal.bad_lines += 1
        if journal.bad_lines:
            logger.info("%s: skipped %d unreadable line(s)", journal.path, journal.bad_lines)
        text = "".join(json.dumps(entry, ensure_ascii=True) + "\n" for entry in journal.entries.values())
        write_atomic(journal.path, text.encode("utf-8"))
        return journal

    def handled(self, key: FrameKey, settings: str | None = None) -> bool:
        """Whether this version of the frame was already segmented or found bad (under
        ``settings``, a :func:`.batch.settings_digest`, when given)."""
        entry = self.entries.get(key.path)
        return (
            entry is not None
            and entry["size"] == key.size
            and entry["mtime_ns"] == key.mtime_ns
            and (settings is None or entry.get("settings") == settings)
        )

    def other_settings(self, settings: str) -> int:
        """How many journaled frames were handled under other settings (or before the
        journal recorded them): a watch with ``settings`` segments them again."""
        return sum(1 for entry in self.entries.values() if entry.get("settings") != settings)

    def stem_for(self, key: FrameKey) -> str:
        """The output stem of a frame: the one it had before, else its name made unique."""
        if key.path in self.entries:
            return str(self.entries[key.path]["stem"])
        return unique_stem(key.path, {str(entry["stem"]) for entry in self.entries.values()})

    def add(self, key: FrameKey, status: str, stem: str, message: str = "", settings: str | None = None) -> None:
        """Appends one entry and fsyncs it.

        Raises:
            OSError: the journal cannot be written.
        """
        entry = {"path": key.path, "size": key.size, "mtime_ns": key.mtime_ns, "status": status, "stem": stem}
        if settings is not None:
            entry["settings"] = settings
        if message:
            entry["message"] = message
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries[key.path] = entry


class FrameTracker:
    """Lists a directory's frames and says which ones are complete (unchanged since the
    previous poll)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._real = os.path.realpath(self.directory)
        self._previous: dict[str, tuple[int, int]] = {}
        self._attached: dict[tuple[str, int, int], bool] = {}  # .IMG version -> starts with a label

    def poll(self) -> list[tuple[Path, FrameKey]]:
        """Complete frames, oldest first.

        Raises:
            OSError: the directory cannot be listed.
        """
        current: dict[str, tuple[int, int]] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") or os.path.splitext(entry.name)[1].lower() not in FRAME_SUFFIXES:
                    continue
                with suppress(OSError):  # vanished or unreadable since the listing
                    if entry.is_file():
                        stat = entry.stat()
                        current[entry.name] = (stat.st_size, stat.st_mtime_ns)
        stable = {
            name for name, (size, mtime) in current.items() if size > 0 and self._previous.get(name) == (size, mtime)
        }
        ready = []
        for name in stable:
            if not self._is_frame(name, current[name]):
                continue
            # A detached label is ready with its data file; a change to either is a new frame.
            data_files = self._data_files(name, current)
            if not set(data_files) <= stable:
                continue
            size, mtime = current[name]
            for data_file in data_files:
                size, mtime = size + current[data_file][0], max(mtime, current[data_file][1])
            ready.append((name, size, mtime))
        self._previous = current
        ready.sort(key=lambda item: (item[2], item[0]))
        return [
            (self.directory / name, FrameKey(os.path.join(self._real, name), size, mtime))
            for name, size, mtime in ready
        ]

    @staticmethod
    def _data_files(name: str, current: dict[str, tuple[int, int]]) -> list[str]:
        """The data files beside a PDS label (same stem, ``.IMG``), as listed."""
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in (".lbl", ".xml"):
            return []
        return [other for other in current if other[: len(stem)] == stem and other[len(stem) :].lower() == ".img"]

    def _is_frame(self, name: str, version: tuple[int, int]) -> bool:
        """PDS files as :func:`.sources.pds.is_product_file` says: an ``.IMG`` without an
        attached label is the data of a detached label, read through that label (when the
        label arrives), and XML that is not a PDS4 label is no frame. Each version of a file
        is looked at once."""
        if not name.lower().endswith((".img", ".lbl", ".xml")):
            return True
        key = (name, *version)
        if key not in self._attached:
            if len(self._attached) > 100_000:
                self._attached.clear()
            self._attached[key] = is_product_file(self.directory / name)
        return self._attached[key]


def watch(
    segmenter: Segmenter,
    directory: Path,
    out: Path,
    stop: threading.Event,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    overlay: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    journal: Journal | None = None,
    source: SourceOptions | None = None,
    confidence: bool = False,
) -> Iterator[WatchEvent]:
    """Segments frames arriving in ``directory`` into ``out`` until ``stop`` is set.

    The frame being segmented when ``stop`` is set is finished (outputs and journal line),
    then the generator returns. Yields one :class:`WatchEvent` per frame handled.

    Raises:
        OSError: the journal cannot be read or written.
    """
    journal = journal or Journal.open(Path(out) / JOURNAL_NAME)
    tracker = FrameTracker(directory)
    settings = settings_digest(segmenter.mask_settings())
    reported: set[tuple[str, str]] = set()  # (path, message) already yielded, not repeated
    while not stop.is_set():
        wait = poll_interval
        try:
            ready = tracker.poll()
        except OSError as exc:
            message = f"cannot list the directory: {exc.strerror or exc}"
            if (str(directory), message) not in reported:
                reported.add((str(directory), message))
                yield WatchEvent("error", Path(directory), message)
            ready = []
        for path, key in ready:
            if stop.is_set():
                break
            if journal.handled(key, settings):
                continue
            try:
                event = _handle(segmenter, path, key, out, journal, overlay, max_pixels, source, confidence, settings)
            except OSError as exc:
                # Outputs or journal line not written (disk full, read-only): not journaled,
                # so retried later; the frames after it would fail alike, so wait first.
                message = f"cannot write outputs to {out}: {exc.strerror or exc}"
                if (key.path, message) not in reported:
                    reported.add((key.path, message))
                    yield WatchEvent("write_failed", path, message)
                wait = max(poll_interval, WRITE_RETRY_S)
                break
            yield event
        stop.wait(wait)


def _handle(
    segmenter: Segmenter,
    path: Path,
    key: FrameKey,
    out: Path,
    journal: Journal,
    overlay: bool,
    max_pixels: int | None,
    source: SourceOptions | None = None,
    confidence: bool = False,
    settings: str | None = None,
) -> WatchEvent:
    """Segments one new frame and journals it; OSError means nothing was journaled."""
    stem = journal.stem_for(key)
    if _already_written(out, stem, path, key, settings):
        journal.add(key, "done", stem, settings=settings)
        return WatchEvent("recovered", path)
    try:
        record = segment_file(segmenter, path, out, stem, overlay, max_pixels, None, source, confidence)
    except ImageError as exc:
        message = str(exc)
    except OSError:
        raise
    except Exception as exc:  # one bad frame never stops the watch
        message = f"unexpected {type(exc).__name__}: {exc}"
    else:
        journal.add(key, "done", stem, settings=settings)
        return WatchEvent("segmented", path, record=record)
    journal.add(key, "failed", stem, message, settings)
    return WatchEvent("failed", path, message)


def _already_written(out: Path, stem: str, path: Path, key: FrameKey, settings: str | None = None) -> bool:
    """Whether ``stem``'s JSON record exists, is for this frame, is newer than it and (with
    ``settings``) was written under those settings."""
    record_path = Path(out) / f"{stem}.json"
    try:
        if record_path.stat().st_mtime_ns < key.mtime_ns:
            return False
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if settings is not None and settings_digest(record.get("mask_settings")) != settings:
            return False
        return os.path.realpath(str(record["input"])) == os.path.realpath(path)
    except (OSError, ValueError, KeyError, TypeError):
        return False

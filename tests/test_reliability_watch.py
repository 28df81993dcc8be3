"""Watch mode: frames segmented as they arrive, once fully written, each exactly once
(also across restarts and crashes), a bad frame survived, a clean stop on SIGINT/SIGTERM.

The library (:mod:`marsedge.edge_runtime.watch`) is driven poll by poll, without sleeping;
two real ``marsedge-run --watch`` processes check signals, the summary and a restart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN, save_png

from marsedge.edge_runtime import batch, watch
from marsedge.edge_runtime.watch import JOURNAL_NAME, FrameTracker, Journal

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dirs(tmp_path) -> tuple[Path, Path]:
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    out.mkdir()
    return incoming, out


def step(segmenter, incoming, out, journal=None, polls: int = 3):
    """Runs a watch for ``polls`` polls and returns its events and journal."""
    journal = journal or Journal.open(out / JOURNAL_NAME)
    stop = threading.Event()
    count = 0
    original = FrameTracker.poll

    def poll(tracker):
        nonlocal count
        count += 1
        if count >= polls:
            stop.set()  # this poll's frames are still handled, then the loop ends
        return original(tracker)

    FrameTracker.poll = poll  # type: ignore[method-assign]
    try:
        events = list(watch.watch(segmenter, incoming, out, stop, poll_interval=0, journal=journal))
    finally:
        FrameTracker.poll = original  # type: ignore[method-assign]
    return events, journal


def kinds(events) -> list[tuple[str, str]]:
    return [(e.kind, e.path.name) for e in events]


def test_tracker_waits_until_a_frame_stops_changing(tmp_path):
    tracker = FrameTracker(tmp_path)
    frame = tmp_path / "f.png"
    data = (GOLDEN / "tile0.png").read_bytes()
    frame.write_bytes(data[:100])
    assert tracker.poll() == []  # first sight
    with open(frame, "ab") as handle:
        handle.write(data[100:500])
    assert tracker.poll() == []  # still growing
    with open(frame, "ab") as handle:
        handle.write(data[500:])
    assert tracker.poll() == []
    ready = tracker.poll()  # unchanged since the last poll: complete
    assert [p.name for p, _ in ready] == ["f.png"] and ready[0][1].size == len(data)


def test_tracker_ignores_hidden_partial_empty_and_non_image_files(tmp_path):
    tracker = FrameTracker(tmp_path)
    (tmp_path / ".f.png").write_bytes(b"x")  # hidden: a writer's temporary name
    (tmp_path / "f.png.part").write_bytes(b"x")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "dir.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    tracker.poll()
    assert tracker.poll() == []
    os.rename(tmp_path / ".f.png", tmp_path / "f.png")  # rename into place
    tracker.poll()
    assert [p.name for p, _ in tracker.poll()] == ["f.png"]


def test_frames_segmented_once_bad_frame_survived_and_restart_skips_done(segmenter, dirs):
    incoming, out = dirs
    shutil.copy(GOLDEN / "tile0.png", incoming / "a.png")
    (incoming / "b.png").write_bytes(b"garbage from a broken downlink")
    shutil.copy(GOLDEN / "frame0.png", incoming / "c.jpg")  # PNG content, JPEG name: fine
    events, journal = step(segmenter, incoming, out)
    assert kinds(events) == [("segmented", "a.png"), ("failed", "b.png"), ("segmented", "c.jpg")]
    assert "not a PNG or JPEG image" in events[1].message
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [JOURNAL_NAME, "a.json", "a_mask.png", "a_overlay.png", "c.json", "c_mask.png", "c_overlay.png"]
    )
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != JOURNAL_NAME}

    # Still running: nothing is done twice. After a restart: nothing either.
    assert step(segmenter, incoming, out, journal)[0] == []
    restarted, journal = step(segmenter, incoming, out)
    assert restarted == []
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != JOURNAL_NAME} == stamps

    # A new frame, a same-stem frame, and the bad frame replaced by a good one.
    shutil.copy(GOLDEN / "tile1.png", incoming / "d.png")
    shutil.copy(GOLDEN / "tile2.png", incoming / "a.jpeg")
    time.sleep(0.01)
    shutil.copy(GOLDEN / "tile2.png", incoming / "b.png")
    events, journal = step(segmenter, incoming, out, journal)
    assert sorted(kinds(events)) == [("segmented", "a.jpeg"), ("segmented", "b.png"), ("segmented", "d.png")]
    stems = {Path(e["path"]).name: e["stem"] for e in journal.entries.values()}
    assert stems == {"a.png": "a", "b.png": "b", "c.jpg": "c", "d.png": "d", "a.jpeg": "a-2"}
    assert json.loads((out / "a-2.json").read_text())["input"] == str(incoming / "a.jpeg")


def test_a_crash_between_outputs_and_journal_is_not_segmented_again(segmenter, dirs, monkeypatch):
    incoming, out = dirs
    frame = shutil.copy(GOLDEN / "tile0.png", incoming / "a.png")
    # What a kill -9 right after segment_file leaves: outputs, no journal line...
    batch.segment_file(segmenter, Path(frame), out, "a")
    # ... and a torn last journal line from an earlier frame.
    (out / JOURNAL_NAME).write_text(
        '{"path": "/x/old.png", "size": 3, "mtime_ns": 1, "status": "done", "stem": "old"}\n{"path": "/x/to'
    )

    def must_not_run(*args, **kwargs):
        raise AssertionError("segmented twice")

    monkeypatch.setattr(watch, "segment_file", must_not_run)
    events, journal = step(segmenter, incoming, out)
    assert kinds(events) == [("recovered", "a.png")]
    assert journal.bad_lines == 1
    lines = (out / JOURNAL_NAME).read_text().splitlines()
    assert [json.loads(line)["stem"] for line in lines] == ["old", "a"]  # compacted, torn line gone


def test_outputs_that_cannot_be_written_are_retried_not_journaled(segmenter, dirs, monkeypatch):
    incoming, out = dirs
    shutil.copy(GOLDEN / "tile0.png", incoming / "a.png")
    shutil.copy(GOLDEN / "tile1.png", incoming / "b.png")
    real_write = batch.write_atomic

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "write_atomic", disk_full)
    monkeypatch.setattr(watch, "WRITE_RETRY_S", 0)
    events, journal = step(segmenter, incoming, out, polls=5)
    # Reported once (not once per poll), nothing journaled, no partial outputs.
    assert kinds(events) == [("write_failed", "a.png")]
    assert "No space left on device" in events[0].message
    assert journal.entries == {}
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL_NAME]

    monkeypatch.setattr(batch, "write_atomic", real_write)  # space freed
    events, journal = step(segmenter, incoming, out, journal)
    assert kinds(events) == [("segmented", "a.png"), ("segmented", "b.png")]


def test_a_vanished_directory_is_reported_once_and_the_watch_goes_on(segmenter, dirs):
    incoming, out = dirs
    incoming.rmdir()
    events, _ = step(segmenter, incoming, out, polls=4)
    assert kinds(events) == [("error", "incoming")] and "cannot list the directory" in events[0].message


# Real processes: signals, summary, restart ------------------------------------------


def start_watch(incoming: Path, out: Path, model: Path, *extra: str, poll: float = 0.05) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "marsedge.edge_runtime.cli", "--watch", str(incoming), "--out", str(out),
         "--poll-interval", str(poll), "--model", str(model), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGINT"]
)
def test_process_stops_cleanly_on_a_signal_and_a_restart_does_nothing_twice(tiny_int8, dirs, sig, record_property):
    record_property("tried", "watch.process")
    incoming, out = dirs
    # Polls far apart compared with the writer's pauses, so a busy CI box cannot make a
    # half-written frame look complete.
    proc = start_watch(incoming, out, tiny_int8, poll=0.25)
    try:
        # Written slowly in place (the frame must wait until complete), then a bad one.
        data = (GOLDEN / "frame0.png").read_bytes()
        with open(incoming / "slow.png", "wb") as handle:
            for at in range(0, len(data), 4096):
                handle.write(data[at : at + 4096])
                handle.flush()
                time.sleep(0.02)
        (incoming / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        save_png(incoming / ".good.png", np.zeros((64, 128), np.uint8))
        os.rename(incoming / ".good.png", incoming / "good.png")
        wait_for(
            lambda: (
                (out / "good.json").exists()
                and (out / "slow.json").exists()
                and "bad.png" in (out / JOURNAL_NAME).read_text()
            )
        )
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == [
        f"error: {incoming / 'bad.png'}: cannot decode image: truncated or corrupt PNG header"
    ]
    last = stdout.splitlines()[-1]
    assert last.startswith(f"watch stopped ({sig.name}): 2 images segmented, 1 failure, mean ")
    assert last.endswith(f"journal {out / JOURNAL_NAME} lists 2 segmented frames")
    assert json.loads((out / "slow.json").read_text())["size"] == {"width": 224, "height": 160}

    # Restart: the three frames are in the journal; only the new one is segmented.
    shutil.copy(GOLDEN / "tile1.png", incoming / "new.png")
    proc = start_watch(incoming, out, tiny_int8, "--json")
    try:
        wait_for(lambda: (out / "new.json").exists())
        time.sleep(0.3)  # a few more polls: nothing else may happen
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert [json.loads(line)["input"] for line in stdout.splitlines()] == [str(incoming / "new.png")]
    assert stderr.splitlines()[-1].startswith("watch stopped (SIGTERM): 1 image segmented, 0 failures")
    record_property("passed", "watch.process")


def test_watch_refuses_inputs_and_missing_directories(tiny_int8, tmp_path):
    from typer.testing import CliRunner

    from marsedge.edge_runtime.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["x.png", "--watch", str(tmp_path), "--model", str(tiny_int8)])
    assert result.exit_code == 2 and result.stderr == "error: give INPUTs or --watch DIR, not both\n"
    result = runner.invoke(app, ["--watch", str(tmp_path / "nope"), "--model", str(tiny_int8)])
    assert result.exit_code == 1 and "--watch needs an existing directory" in result.stderr
    result = runner.invoke(app, ["--model", str(tiny_int8)])
    assert result.exit_code == 2 and "nothing to segment" in result.stderr


def test_a_watch_restarted_with_another_model_segments_again(segmenter, tiny_float32, dirs, tmp_path):
    incoming, out = dirs
    shutil.copy(GOLDEN / "frame0.png", incoming / "a.png")
    events, journal = step(segmenter, incoming, out)
    assert kinds(events) == [("segmented", "a.png")]
    other = watch.Segmenter(tiny_float32)
    journal = Journal.open(out / JOURNAL_NAME)
    assert journal.other_settings(batch.settings_digest(other.mask_settings())) == 1
    events, journal = step(other, incoming, out, journal)
    assert kinds(events) == [("segmented", "a.png")]  # the other model's mask, not the first one's
    reference = tmp_path / "reference"
    reference.mkdir()
    batch.segment_file(other, incoming / "a.png", reference, "a")
    assert (out / "a_mask.png").read_bytes() == (reference / "a_mask.png").read_bytes()
    assert step(other, incoming, out, journal)[0] == []  # done under these settings
    assert json.loads((out / "a.json").read_text())["mask_settings"] == other.mask_settings()


def test_the_watch_command_says_once_that_it_segments_again_under_another_model(tiny_int8, tiny_float32, dirs):
    incoming, out = dirs
    shutil.copy(GOLDEN / "tile1.png", incoming / "a.png")
    outputs = []
    journal = out / JOURNAL_NAME
    for model in (tiny_int8, tiny_float32, tiny_float32):
        before = journal.stat().st_mtime_ns if journal.exists() else 0
        proc = start_watch(incoming, out, model, "--json")
        try:
            # started (the journal is rewritten at start) and the frame done under this model
            wait_for(lambda b=before: journal.exists() and journal.stat().st_mtime_ns > b)
            wait_for(lambda m=model: _journaled_with(out, m))
            time.sleep(0.5)  # a few more polls: nothing else may happen
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, stderr
        outputs.append((stdout, [line for line in stderr.splitlines() if line.startswith("note:")]))
    (first, none), (second, notes), (third, later) = outputs
    assert len(first.splitlines()) == len(second.splitlines()) == 1 and third == ""
    assert none == [] and later == [] and len(notes) == 1 and "1 frame(s)" in notes[0]
    assert (
        json.loads(second)["mask_settings"]["model_sha256"]
        == batch.hashlib.sha256(tiny_float32.read_bytes()).hexdigest()
    )


def _journaled_with(out: Path, model: Path) -> bool:
    """Whether the journal's entry for a.png was written under ``model``."""
    try:
        record = json.loads((out / "a.json").read_text())
    except (OSError, ValueError):
        return False
    digest = batch.hashlib.sha256(model.read_bytes()).hexdigest()
    entries = [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]
    return record["model"]["sha256"] == digest and any(e.get("settings") for e in entries)

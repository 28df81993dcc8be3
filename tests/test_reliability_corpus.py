"""marsedge-run on a corpus of nasty files: one clear line each, never a traceback or a hang,
no partial outputs, and the rest of the batch goes on.

The files are in tests/data/nasty (written by `python tools/make_nasty_corpus.py`, with
MANIFEST.json saying what each must give). What cannot live in git is made here: a FIFO,
a symlink loop, a directory named like an image, names with a newline or with bytes that
are not UTF-8, and read-only or full output directories (a real tmpfs when the tests run
as root, else a simulation). Each case is recorded with ``record_property`` so
`python tools/reliability_report.py` can count them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, GOLDEN, save_png, time_limit
from typer.testing import CliRunner

from marsedge.core import atomic
from marsedge.edge_runtime import imageio
from marsedge.edge_runtime.cli import app

ROOT = Path(__file__).resolve().parents[1]
NASTY = DATA / "nasty"
MANIFEST = json.loads((NASTY / "MANIFEST.json").read_text(encoding="utf-8"))
OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", ".json")


def run_cli(*args, timeout: float = 60):
    with time_limit(timeout):
        return CliRunner().invoke(app, [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else a for a in args])


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


def outputs_of(out: Path, stem: str) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name in {stem + s for s in OUTPUT_SUFFIXES})


def leftovers(out: Path) -> list[str]:
    """Temporary files a write left behind (a partial output under a hidden name)."""
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".part") or p.name.startswith(".marsedge-probe"))


def check_case(
    name: str, expect: dict, records: dict[str, dict], errors: list[str], out: Path, shown: str
) -> str | None:
    """Why one corpus case is wrong (None when it behaved)."""
    mine = [e for e in errors if e.startswith(f"error: {shown}: ")]
    stem = Path(name).stem
    if expect["expect"] == "ok":
        if mine:
            return f"expected a mask, got {mine}"
        record = records.get(shown)
        if record is None:
            return "no JSON record on stdout"
        if [record["size"]["width"], record["size"]["height"]] != expect["size"]:
            return f"size {record['size']} != {expect['size']}"
        if len(outputs_of(out, stem)) != 3:
            return f"outputs {outputs_of(out, stem)}"
        return None
    if len(mine) != 1:
        return f"expected one error line, got {mine}"
    if expect["fragment"] not in mine[0]:
        return f"{mine[0]!r} lacks {expect['fragment']!r}"
    if outputs_of(out, stem):
        return f"left outputs {outputs_of(out, stem)}"
    return None


def test_corpus_each_file_gives_one_line_and_the_batch_goes_on(tiny_int8, tmp_path, record_property):
    out = tmp_path / "out"
    # A good image first and last: the batch goes on past every bad file.
    result = run_cli(GOLDEN / "tile0.png", NASTY, GOLDEN / "tile1.png", "--out", out, "--json", "--max-pixels", str(MANIFEST["max_pixels"]),
                     "--model", tiny_int8)  # fmt: skip
    assert "Traceback" not in result.output
    records = {r["input"]: r for r in map(json.loads, result.stdout.splitlines())}
    errors = error_lines(result.stderr)
    problems = {}
    for name, expect in MANIFEST["cases"].items():
        record_property("tried", f"corpus.{expect['expect']}")
        problem = check_case(name, expect, records, errors, out, str(NASTY / name))
        if problem:
            problems[name] = problem
        else:
            record_property("passed", f"corpus.{expect['expect']}")
    assert not problems, problems
    bad = sum(1 for e in MANIFEST["cases"].values() if e["expect"] == "error")
    assert len(errors) == bad
    assert result.stderr.splitlines()[-1].startswith(
        f"{len(MANIFEST['cases']) - bad + 2} images segmented, {bad} failures"
    )
    assert result.exit_code == 1
    assert not leftovers(out)


def test_corpus_in_a_real_process_with_a_timeout(tiny_int8, tmp_path, record_property):
    """The same corpus through the console script: what a rover pipeline sees (no hang,
    no Python warnings or tracebacks on stderr, only error lines and the summary)."""
    record_property("tried", "corpus.process")
    proc = subprocess.run(
        [sys.executable, "-m", "marsedge.edge_runtime.cli", str(NASTY), "--out", str(tmp_path / "out"), "--no-overlay",
         "--max-pixels", str(MANIFEST["max_pixels"]), "--model", str(tiny_int8)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    bad = sum(1 for e in MANIFEST["cases"].values() if e["expect"] == "error")
    assert proc.returncode == 1
    assert len(lines) == bad and all(line.startswith("error: ") for line in lines), lines
    assert proc.stdout.splitlines()[-1].startswith(f"{len(MANIFEST['cases']) - bad} images segmented, {bad} failures")
    record_property("passed", "corpus.process")


def test_corpus_stays_small():
    assert sum(p.stat().st_size for p in NASTY.iterdir()) < 200_000
    assert sum(p.stat().st_size for p in ARCHIVES.rglob("*") if p.is_file()) < 200_000


# Broken PDS products and bags (tests/data/nasty_archives) ----------------------------------

ARCHIVES = DATA / "nasty_archives"


def archive_cases() -> dict[str, dict]:
    return json.loads((ARCHIVES / "MANIFEST.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "real-process"])
def test_archive_corpus_each_problem_is_one_line_and_the_rest_goes_on(tiny_int8, tmp_path, record_property, process):
    """Broken labels, wrong record counts, truncated data, missing data files, corrupt and
    unreadable bags: the error lines the manifest lists (naming the file, and the message
    for a bag), no traceback or library warning, and every good frame still segmented."""
    pytest.importorskip("pdr")
    pytest.importorskip("rosbags")
    cases = archive_cases()
    inputs = [str(ARCHIVES / name) for name in cases]
    out = tmp_path / "out"
    args = [GOLDEN / "tile0.png", *inputs, "--out", out, "--json", "--no-overlay", "--model", tiny_int8]
    if process:
        proc = subprocess.run(
            [sys.executable, "-m", "marsedge.edge_runtime.cli", *map(str, args)],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    else:
        result = run_cli(*args)
        stdout, stderr, code = result.stdout, result.stderr, result.exit_code
    assert "Traceback" not in stdout + stderr and "Warning" not in stderr, stderr
    errors = error_lines(stderr)
    records = [json.loads(line) for line in stdout.splitlines()]
    problems = {}
    for name, expect in cases.items():
        record_property("tried", "corpus.archives")
        source = str(ARCHIVES / name)
        mine = [e for e in errors if e.startswith(f"error: {source}: ")]
        fragments = expect["errors"]
        segmented = [r for r in records if r["input"] == source or r["input"].startswith(source + "#")]
        if len(mine) != len(fragments) or not all(f in line for f, line in zip(fragments, mine)):
            problems[name] = f"expected {fragments}, got {mine}"
        elif len(segmented) != expect["segmented"]:
            problems[name] = f"{len(segmented)} frames segmented, expected {expect['segmented']}"
        else:
            record_property("passed", "corpus.archives")
    assert not problems, problems
    assert len(errors) == sum(len(e["errors"]) for e in cases.values())
    assert len(records) == 1 + sum(e["segmented"] for e in cases.values())
    assert code == 1
    assert not leftovers(out)


@pytest.fixture
def odd_files(tmp_path) -> dict[str, str | None]:
    """Files only a file system can make: path -> error fragment (None: must succeed)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    tile = np.zeros((8, 8), np.uint8)
    os.mkfifo(folder / "pipe.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    (folder / "dir.png").mkdir()
    save_png(folder / "new\nline.png", tile)
    (folder / "tab\tbad.jpg").write_bytes(b"not a jpeg")
    save_png(Path(os.fsdecode(bytes(folder) + b"/latin1-\xe9t\xe9.png")), tile)
    unreadable = save_png(folder / "unreadable.png", tile)
    unreadable.chmod(0)
    return {
        str(folder / "pipe.png"): "not a regular file",
        str(folder / "loop.png"): "cannot open: Too many levels of symbolic links",
        str(folder / "dir.png"): "directory has no PNG or JPEG images",
        str(folder / "new\nline.png"): None,
        str(folder / "tab\tbad.jpg"): "not a PNG or JPEG image",
        os.fsdecode(bytes(folder) + b"/latin1-\xe9t\xe9.png"): None,
        "/dev/zero": "not a regular file",
        str(unreadable): None if os.geteuid() == 0 else "permission denied",
    }


@pytest.mark.parametrize("json_mode", [False, True], ids=["table", "json"])
def test_odd_files_and_names_print_one_escaped_line_each(tiny_int8, tmp_path, odd_files, json_mode, record_property):
    out = tmp_path / "out"
    args = [GOLDEN / "tile0.png", *odd_files, GOLDEN / "tile1.png", "--out", out, "--model", tiny_int8] + (
        ["--json"] if json_mode else []
    )
    result = run_cli(*args, timeout=30)  # a FIFO read would block forever
    assert "Traceback" not in result.output
    errors = error_lines(result.stderr)
    for path, fragment in odd_files.items():
        record_property("tried", "filesystem")
        shown = os.fsencode(path).decode("utf-8", "backslashreplace").replace("\n", "\\n").replace("\t", "\\t")
        mine = [e for e in errors if e.startswith(f"error: {shown}: ")]
        if fragment is None:
            assert not mine, (path, mine)
        else:
            assert len(mine) == 1 and fragment in mine[0], (path, errors)
        record_property("passed", "filesystem")
    # Every line stays one line (escaped names), and printing never fails on odd bytes.
    assert len(result.stderr.splitlines()) == len(errors) + (1 if json_mode else 0)
    expected_ok = 2 + sum(1 for f in odd_files.values() if f is None)
    rows = result.stdout.splitlines()
    assert len(rows) == (expected_ok if json_mode else expected_ok + 2)
    assert not leftovers(out)


def test_non_utf8_name_survives_a_strict_stdout(tiny_int8, tmp_path):
    """With PYTHONIOENCODING=utf-8 (strict), printing a raw non-UTF-8 name used to raise
    UnicodeEncodeError after the outputs were written: a traceback mid-batch."""
    name = os.fsdecode(bytes(tmp_path) + b"/\xff-frame.png")
    save_png(Path(name), np.zeros((8, 8), np.uint8))
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "marsedge.edge_runtime.cli", name, "--out", str(tmp_path / "out"), "--model", str(tiny_int8)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env=env, errors="replace",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\\xff-frame.png" in proc.stdout and "Traceback" not in proc.stderr


# Output directories that refuse writes ------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False, wanted: bool = True):
    """Mounts a tmpfs of ``size`` at ``path`` (root only); yields False if it cannot."""
    path.mkdir(parents=True, exist_ok=True)
    if not wanted or os.geteuid() != 0 or not shutil.which("mount"):
        yield False
        return
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.parametrize("device", ["tmpfs", "simulated"])
def test_read_only_output_directory_is_one_line(tiny_int8, tmp_path, monkeypatch, record_property, device):
    record_property("tried", "output_dir")
    out = tmp_path / "ro"
    with tmpfs(out, "1m", read_only=True, wanted=device == "tmpfs") as real:
        if not real:
            out.mkdir(exist_ok=True)
            if os.geteuid() != 0:
                out.chmod(0o555)
            else:  # root ignores modes: simulate EROFS where files are created

                def refuse(*args, **kwargs):
                    raise OSError(errno.EROFS, "Read-only file system")

                monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
        result = run_cli(GOLDEN / "tile0.png", GOLDEN / "tile1.png", "--out", out, "--model", tiny_int8)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error_lines(result.stderr) == [error_lines(result.stderr)[0]]
    assert "output directory is not writable" in result.stderr
    record_property("passed", "output_dir")


@pytest.mark.parametrize("device", ["tmpfs", "simulated"])
def test_full_output_directory_leaves_whole_outputs_or_none(tiny_int8, tmp_path, monkeypatch, record_property, device):
    """A disk that fills up mid-batch: each image has all three outputs or none, no temp
    files stay, each failure is one line, and the batch does not stop early."""
    record_property("tried", "output_dir")
    out = tmp_path / "full"
    frames = [GOLDEN / f"tile{i}.png" for i in range(3)]
    for i in range(3):
        frames.append(tmp_path / f"frame{i}.png")
        shutil.copy(GOLDEN / "frame0.png", frames[-1])
    with tmpfs(out, "96k", wanted=device == "tmpfs") as real:
        if not real:
            quota = 96_000

            def fsync_with_quota(fd):  # simulated: a write past the quota fails like ENOSPC
                if sum(p.stat().st_size for p in out.iterdir()) > quota:
                    raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(imageio.os, "fsync", fsync_with_quota)
        result = run_cli(*frames, "--out", out, "--json", "--model", tiny_int8)
        assert result.exit_code == 1 and "Traceback" not in result.output
        errors = error_lines(result.stderr)
        assert errors and all("No space left on device" in e for e in errors)
        segmented = len(result.stdout.splitlines())
        assert segmented >= 1, "the disk should fill up mid-batch, not before the first image"
        assert segmented + len(errors) == len(frames)
        stems = [frame.stem for frame in frames]
        for stem in stems:
            assert len(outputs_of(out, stem)) in (0, 3), outputs_of(out, stem)
        assert sum(len(outputs_of(out, stem)) == 3 for stem in stems) == segmented
        assert not leftovers(out)
    record_property("passed", "output_dir")

"""Fuzzing marsedge-run with hypothesis: random bytes, mutated PNG/JPEG files and odd but
valid images (any mode, size, bit depth, EXIF orientation), mixed into batches with good
images.

For every file: exactly one outcome, a JSON record or one ``error:`` line, never a
traceback or a hang; a failed file leaves no outputs and no temporary files; the good
images around it are segmented. The default run tries a few examples per property (fast);
``MARSEDGE_FUZZ_EXAMPLES=300`` (what `tools/reliability_report.py` sets) tries more.
Every example is recorded with ``record_property`` for the report's counts.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from conftest import GOLDEN, time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from marsedge.edge_runtime import ImageError
from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.imageio import load_gray

EXAMPLES = int(os.environ.get("MARSEDGE_FUZZ_EXAMPLES", "10"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("MARSEDGE_FUZZ_RANDOM") is None,  # reproducible unless asked
)
SUFFIXES = [".png", ".jpg", ".jpeg", ".PNG", ".JPG"]
MODES = ["L", "LA", "RGB", "RGBA", "P", "1", "I;16", "CMYK"]


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (24, 40), dtype=np.uint8)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8
    return [
        _encode(grey, "PNG"),
        _encode(rgb, "PNG"),
        _encode(grey.astype(np.uint16) * 257, "PNG"),
        _encode(grey, "JPEG", quality=85),
        _encode(rgb, "JPEG", progressive=True),
        _encode(grey, "JPEG", exif=exif),
    ]


SEEDS = _seeds()


@st.composite
def mutated_file(draw) -> bytes:
    """A valid PNG/JPEG with a few truncations, byte changes, insertions or deletions."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["cut", "set", "insert", "delete"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "cut":
            del data[at:]
        elif op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def odd_image(draw) -> tuple[bytes, tuple[int, int]]:
    """A valid image of any mode, tiny to medium size, maybe EXIF-rotated; with the size
    (width, height) its mask must have."""
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mode = draw(st.sampled_from(MODES))
    fmt = "JPEG" if mode == "CMYK" else draw(st.sampled_from(["PNG", "JPEG"]))
    if fmt == "JPEG" and mode not in ("L", "RGB", "CMYK"):
        mode = "L"
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    options = {}
    orientation = draw(st.integers(1, 8)) if fmt == "JPEG" else 1
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return buffer.getvalue(), size


def run_batch(tiny_int8: Path, root: Path, files: list[tuple[str, bytes]]) -> tuple[object, Path, list[Path]]:
    """Writes ``files`` between two good images and runs marsedge-run --json on them."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-", dir=root))
    inputs = [GOLDEN / "tile0.png"]
    for i, (suffix, data) in enumerate(files):
        path = folder / f"case{i}{suffix}"
        path.write_bytes(data)
        inputs.append(path)
    inputs.append(GOLDEN / "tile1.png")
    out = folder / "out"
    with time_limit(60):
        result = CliRunner().invoke(
            app, [*map(str, inputs), "--out", str(out), "--json", "--max-pixels", "4000000", "--model", str(tiny_int8)]
        )
    return result, out, inputs


def check_batch(result, out: Path, inputs: list[Path], sizes: dict[Path, tuple[int, int]] | None = None) -> None:
    """The invariants every fuzz batch must hold."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    records = {r["input"]: r for r in map(json.loads, result.stdout.splitlines())}
    stderr = result.stderr.splitlines()
    errors, summary = stderr[:-1], stderr[-1]
    assert all(line.startswith("error: ") for line in errors), errors
    assert "images segmented" in summary or "image segmented" in summary
    for path in inputs:
        mine = [e for e in errors if e.startswith(f"error: {path}: ")]
        assert (str(path) in records) + len(mine) == 1, (path, mine)  # exactly one outcome
        written = sorted(
            p.name for p in out.iterdir() if p.name.startswith(path.stem + "_") or p.name == path.stem + ".json"
        )
        assert len(written) == (3 if str(path) in records else 0), written
        if sizes and path in sizes:
            assert str(path) in records, mine
            assert (records[str(path)]["size"]["width"], records[str(path)]["size"]["height"]) == sizes[path]
    assert str(inputs[0]) in records and str(inputs[-1]) in records  # the batch went on
    assert result.exit_code == (1 if errors else 0)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]


@FUZZ
@given(files=st.lists(st.tuples(st.sampled_from(SUFFIXES), st.binary(max_size=2048)), min_size=1, max_size=4))
def test_random_bytes(tiny_int8, tmp_path, record_property, files):
    record_property("tried", "fuzz.random_bytes")
    check_batch(*run_batch(tiny_int8, tmp_path, files))
    record_property("passed", "fuzz.random_bytes")


@FUZZ
@given(files=st.lists(st.tuples(st.sampled_from(SUFFIXES), mutated_file()), min_size=1, max_size=4))
def test_mutated_png_and_jpeg(tiny_int8, tmp_path, record_property, files):
    record_property("tried", "fuzz.mutated")
    check_batch(*run_batch(tiny_int8, tmp_path, files))
    record_property("passed", "fuzz.mutated")


@FUZZ
@given(images=st.lists(odd_image(), min_size=1, max_size=3))
def test_odd_valid_images_are_segmented_at_their_size(tiny_int8, tmp_path, record_property, images):
    record_property("tried", "fuzz.valid_images")
    files = [(".png" if data.startswith(b"\x89PNG") else ".jpg", data) for data, _ in images]
    result, out, inputs = run_batch(tiny_int8, tmp_path, files)
    check_batch(result, out, inputs, sizes={inputs[i + 1]: size for i, (_, size) in enumerate(images)})
    record_property("passed", "fuzz.valid_images")


@FUZZ
@given(data=st.one_of(st.binary(max_size=4096), mutated_file()))
def test_loader_raises_only_image_error(record_property, data):
    """The library under the CLI: load_gray returns a uint8 (H, W) array or raises
    ImageError, nothing else (the CLI's safety net is not what keeps it clean)."""
    record_property("tried", "fuzz.loader")
    with tempfile.NamedTemporaryFile(suffix=".png") as handle:
        handle.write(data)
        handle.flush()
        try:
            with time_limit(20):
                gray = load_gray(handle.name)
        except ImageError as exc:
            assert str(exc) and "\n" not in str(exc)
        else:
            assert gray.dtype == np.uint8 and gray.ndim == 2 and gray.size > 0
    record_property("passed", "fuzz.loader")

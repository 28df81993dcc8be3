"""marsedge-run: outputs, JSON records, input expansion and every bad-input case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN, save_png
from PIL import Image
from typer.testing import CliRunner

from marsedge.edge_runtime import batch, embed_metadata, read_metadata
from marsedge.edge_runtime.cli import app

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"load", "preprocess", "infer", "postprocess", "write", "total"}


def run(*args: str | os.PathLike, model=None):
    argv = [str(a) for a in args]
    if model is not None:
        argv += ["--model", str(model)]
    return CliRunner().invoke(app, argv, prog_name="marsedge-run")


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def images(tmp_path) -> Path:
    """A directory with two good images, a stray text file and a subdirectory."""
    folder = tmp_path / "in"
    folder.mkdir()
    frame = np.array(Image.open(GOLDEN / "frame0.png"))
    save_png(folder / "a.png", frame)
    Image.fromarray(frame[:64, :128]).save(folder / "b.JPG", quality=90)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    save_png(folder / "sub" / "c.png", frame[:30, :40])
    return folder


def test_outputs_and_json_record(tiny_int8, images, tmp_path):
    out = tmp_path / "out"
    result = run(images / "a.png", "--out", out, "--json", model=tiny_int8)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record == json.loads((out / "a.json").read_text())
    assert record["input"] == str(images / "a.png")
    assert record["size"] == {"width": 224, "height": 160}
    assert set(record["class_fractions"]) == {"unlabeled", "soil", "bedrock", "sand", "big_rock"}
    assert sum(record["class_fractions"].values()) == pytest.approx(1.0, abs=1e-5)
    latency = record["latency_ms"]
    assert set(latency) == STAGES and all(v >= 0 for v in latency.values())
    assert latency["total"] == pytest.approx(sum(v for k, v in latency.items() if k != "total"), abs=0.01)
    meta = read_metadata(tiny_int8)
    assert record["model"]["name"] == meta["name"] and record["model"]["version"] == meta["marsedge_version"]
    assert record["tiles"] == 6
    assert record["outputs"] == {
        "mask": str(out / "a_mask.png"),
        "overlay": str(out / "a_overlay.png"),
        "json": str(out / "a.json"),
    }

    mask = Image.open(out / "a_mask.png")
    assert mask.mode == "P" and mask.size == (224, 160)
    fractions = np.bincount(np.array(mask).ravel(), minlength=5) / mask.size[0] / mask.size[1]
    assert list(record["class_fractions"].values()) == pytest.approx(list(fractions), abs=1e-5)
    overlay = Image.open(out / "a_overlay.png")
    assert overlay.mode == "RGB" and overlay.size[0] == 224 and overlay.size[1] > 160


def test_human_mode_prints_a_table_and_summary(tiny_int8, images, tmp_path):
    result = run(images, "--out", tmp_path / "out", "--no-overlay", model=tiny_int8)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["size", "tiles", "ms", "soil"]
    assert lines[1].split()[0] == "224x160" and lines[1].endswith("a.png")
    assert lines[-1].startswith("2 images segmented, 0 failures, mean ") and lines[-1].endswith(" FPS")
    assert not list((tmp_path / "out").glob("*_overlay.png"))


def test_directories_and_globs_expand(images):
    names = lambda paths: sorted(p.relative_to(images).as_posix() for p in paths)  # noqa: E731
    paths, problems = batch.expand_inputs([str(images)])
    assert names(paths) == ["a.png", "b.JPG"]
    assert [(p.notice, p.message.split(" (")[0]) for p in problems] == [
        (True, "1 image(s) in subfolders not segmented")
    ]
    paths, problems = batch.expand_inputs([str(images)], recursive=True)
    assert names(paths) == ["a.png", "b.JPG", "sub/c.png"] and not problems
    paths, _ = batch.expand_inputs([str(images / "*.png")])
    assert names(paths) == ["a.png"]
    paths, _ = batch.expand_inputs([str(images / "**" / "*.png")])
    assert names(paths) == ["a.png", "sub/c.png"]
    paths, _ = batch.expand_inputs([str(images / "s*")])  # a glob matching a directory
    assert names(paths) == ["sub/c.png"]
    # Listed once however often it is named; a named non-image is kept (and fails later).
    paths, _ = batch.expand_inputs([str(images / "a.png"), str(images), str(images / "notes.txt")])
    assert names(paths) == ["a.png", "b.JPG", "notes.txt"]


def test_images_in_subfolders_are_announced_or_segmented_with_recursive(tiny_int8, images, tmp_path):
    skipped = run(images, "--out", tmp_path / "flat", model=tiny_int8)
    assert skipped.exit_code == 0, skipped.stderr  # a notice, not a failure
    assert "note: " in skipped.stderr and "1 image(s) in subfolders not segmented (add --recursive" in skipped.stderr
    assert not (tmp_path / "flat" / "c.json").exists()
    nested = run(images, "--recursive", "--out", tmp_path / "deep", model=tiny_int8)
    assert nested.exit_code == 0, nested.stderr
    assert (tmp_path / "deep" / "c.json").exists() and "note:" not in nested.stderr
    assert nested.stdout.splitlines()[-1].startswith("3 images segmented, 0 failures")


def test_an_all_failure_run_reports_no_speed(tiny_int8, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = run(bad, tmp_path / "missing.png", "--out", tmp_path / "out", model=tiny_int8)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "0 images segmented, 2 failures"
    assert batch.summary([], 1) == "0 images segmented, 1 failure"
    assert batch.summary([20.0], 0) == "1 image segmented, 0 failures, mean 20.0 ms/image, 50.0 FPS"


def test_same_stem_from_two_folders_does_not_overwrite(tiny_int8, images, tmp_path):
    out = tmp_path / "out"
    other = tmp_path / "other"
    other.mkdir()
    save_png(other / "a.png", np.zeros((64, 128), np.uint8))
    result = run(images / "a.png", other / "a.png", "--out", out, model=tiny_int8)
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "a.json").read_text())["input"] == str(images / "a.png")
    assert json.loads((out / "a-2.json").read_text())["input"] == str(other / "a.png")


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Bad inputs and a fragment of the error each must produce."""
    good = np.array(Image.open(GOLDEN / "tile0.png"))
    png = folder / "good.png"
    save_png(png, good)
    (folder / "truncated.png").write_bytes(png.read_bytes()[:200])
    jpeg = folder / "truncated.jpg"
    Image.fromarray(good).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    (folder / "text.png").write_text("hello")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "no images").mkdir()
    os.symlink(folder / "gone.png", folder / "dangling.png")
    save_png(folder / "big.png", np.zeros((300, 300), np.uint8))
    return {
        "truncated.png": "cannot decode image",
        "truncated.jpg": "cannot decode image",
        "text.png": "not a PNG or JPEG image",
        "empty.jpg": "not a PNG or JPEG image",
        "no images": "directory has no PNG or JPEG images",
        "dangling.png": "no such file",
        "missing.png": "no such file",
        "nothing*.png": "no files match",
        "big.png": "above the limit of 50000 (--max-pixels)",
    }


def test_every_bad_input_gets_one_line_and_the_batch_goes_on(tiny_int8, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = make_bad_inputs(folder)
    out = tmp_path / "out"
    bad = [folder / name for name in expected]
    unicode = save_png(folder / "mars ü 火星.png", np.zeros((64, 128), np.uint8))
    result = run(
        folder / "good.png", *bad, unicode, folder / "good.png", "--out", out, "--max-pixels", "50000", model=tiny_int8
    )
    assert result.exit_code == 1
    errors = error_lines(result)
    assert len(errors) == len(expected)
    for name, fragment in expected.items():
        assert [e for e in errors if f"{folder / name}: " in e and fragment in e], (name, errors)
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"2 images segmented, {len(expected)} failures")
    written = [
        "good.json",
        "good_mask.png",
        "good_overlay.png",
        "mars ü 火星.json",
        "mars ü 火星_mask.png",
        "mars ü 火星_overlay.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)


def flatbuffer_of(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: data.rfind(b"PK\x03\x04")]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda m: b"\0" * 64, "no marsedge metadata"),
        (lambda m: flatbuffer_of(m), "no marsedge metadata"),
        (lambda m: embed_metadata(b"not a flatbuffer" * 10, read_metadata(m)), "not a TFLite model"),
        (
            lambda m: embed_metadata(
                flatbuffer_of(m), dict(read_metadata(m), input=dict(read_metadata(m)["input"], width=96))
            ),
            "wrong input shape",
        ),
    ],
    ids=["not-a-model", "no-metadata", "metadata-on-garbage", "wrong-input-shape"],
)
def test_bad_models_give_one_line_and_exit_1(tiny_int8, tmp_path, make, fragment):
    model = tmp_path / "bad.tflite"
    model.write_bytes(make(tiny_int8))
    result = run(GOLDEN / "tile0.png", "--out", tmp_path / "out", model=model)
    assert result.exit_code == 1
    assert error_lines(result) == [e for e in error_lines(result) if str(model) in e and fragment in e]
    assert len(error_lines(result)) == 1
    assert not (tmp_path / "out").exists()


def test_failed_write_leaves_no_partial_outputs(tiny_int8, tmp_path, monkeypatch):
    real_write = batch.write_atomic

    def disk_full_on_overlay(path, data):
        if path.name.endswith("_overlay.png"):
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(batch, "write_atomic", disk_full_on_overlay)
    out = tmp_path / "out"
    result = run(GOLDEN / "tile0.png", "--out", out, model=tiny_int8)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {GOLDEN / 'tile0.png'}: cannot write outputs to {out}: No space left on device"
    ]
    assert list(out.iterdir()) == []


def test_output_directory_that_cannot_be_created(tiny_int8, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run(GOLDEN / "tile0.png", "--out", blocker / "out", model=tiny_int8)
    assert result.exit_code == 1 and len(error_lines(result)) == 1
    assert "cannot create output directory" in result.stderr


def test_bad_tile_overlap_is_explained(tiny_int8, tmp_path):
    result = run(GOLDEN / "tile0.png", "--out", tmp_path, "--tile-overlap", "64", model=tiny_int8)
    assert result.exit_code == 1
    assert error_lines(result) == ["error: tile_overlap must be in 0..63 for 64x128 tiles, got 64"]


def test_console_run_without_model_option_uses_the_bundled_model(tmp_path):
    # A real process: what the user sees, with the bundled model and reference kernels.
    (tmp_path / "junk.png").write_text("junk")
    proc = subprocess.run(
        [sys.executable, "-m", "marsedge.edge_runtime.cli", str(GOLDEN / "tile0.png"), str(tmp_path / "junk.png"),
         "--out", str(tmp_path / "out"), "--json", "--reference-kernels"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == f"error: {tmp_path / 'junk.png'}: not a PNG or JPEG image"
    assert proc.stderr.splitlines()[1].startswith("1 image segmented, 1 failure")
    assert len(proc.stderr.splitlines()) == 2
    record = json.loads(proc.stdout)
    assert record["model"]["path"].endswith("marsedge_int8.tflite")

"""--bit-depth: 10- and 12-bit frames stored in 16-bit PNGs are scaled by their real depth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image
from typer.testing import CliRunner

from marsedge.edge_runtime import ImageError, Segmenter
from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.grey import frame_bit_depth, frame_to_gray8, to_gray8


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="marsedge-run")


def twelve_bit_frame() -> np.ndarray:
    """A 12-bit frame: the golden frame's levels x16 plus seeded sub-level detail."""
    frame = np.array(Image.open(GOLDEN / "frame0.png")).astype(np.uint16)
    return frame * 16 + np.random.default_rng(3).integers(0, 16, frame.shape, dtype=np.uint16)


def as_eight(twelve: np.ndarray) -> np.ndarray:
    """The same frame as 8-bit levels, rounded."""
    return np.floor(twelve.astype(np.float64) * 255 / 4095 + 0.5).astype(np.uint8)


def save16(path, array):
    Image.fromarray(array.astype(np.uint16)).save(path)  # 16-bit grey PNG (mode I;16)
    return path


def test_depth_rules():
    twelve = twelve_bit_frame()
    assert frame_bit_depth(twelve) == 12 and frame_bit_depth(twelve // 4) == 10
    assert frame_bit_depth(twelve * 16) == 16 and frame_bit_depth(twelve.astype(np.uint8)) == 8
    gray, depth = frame_to_gray8(twelve)
    assert depth == 12 and gray.dtype == np.uint8
    assert np.array_equal(gray, as_eight(twelve))
    assert np.array_equal(frame_to_gray8(twelve * 16, 16)[0], to_gray8(twelve * 16))  # 16 bits as before
    assert frame_to_gray8(twelve, 16)[1] == 16  # told 16: the old, dark reading
    with pytest.raises(ImageError, match="above the 1023 of 10-bit"):
        frame_to_gray8(twelve, 10)
    with pytest.raises(ValueError, match="bit_depth"):
        Segmenter(bit_depth=9)


def test_the_same_12_bit_frame_as_8_and_as_16_bit_png_gives_the_same_mask(tiny_int8, tmp_path):
    twelve = twelve_bit_frame()
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(as_eight(twelve)).save(inputs / "as8.png")
    save16(inputs / "as16.png", twelve)
    save16(inputs / "also16.png", twelve[::-1])
    out = tmp_path / "out"
    result = run(inputs, "--out", out, "--model", tiny_int8, "--json")
    assert result.exit_code == 0, result.stderr
    records = {json.loads(line)["input"].split("/")[-1]: json.loads(line) for line in result.stdout.splitlines()}
    assert records["as8.png"]["bit_depth"] == 8 and records["as16.png"]["bit_depth"] == 12
    as8, as16 = (np.array(Image.open(out / f"{stem}_mask.png")) for stem in ("as8", "as16"))
    assert (as8 == as16).mean() >= 0.99
    notices = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notices) == 1 and "read as 12-bit" in notices[0]  # once per run, not per frame

    dark = run(inputs / "as16.png", "--out", tmp_path / "dark", "--model", tiny_int8, "--bit-depth", "16", "--json")
    assert json.loads(dark.stdout)["bit_depth"] == 16 and "note:" not in dark.stderr


def test_a_frame_above_the_given_depth_fails_alone_and_a_bad_depth_is_a_usage_error(tiny_int8, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    save16(inputs / "a12.png", twelve_bit_frame())
    Image.fromarray(np.full((40, 50), 100, np.uint8)).save(inputs / "b8.png")
    out = tmp_path / "out"
    result = run(inputs, "--out", out, "--model", tiny_int8, "--bit-depth", "10")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a12.png" in errors[0] and "10-bit" in errors[0]
    assert (out / "b8_mask.png").is_file() and not (out / "a12_mask.png").exists()
    result = run(inputs, "--out", tmp_path / "other", "--model", tiny_int8, "--bit-depth", "9")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_the_python_api_takes_the_bit_depth(tiny_int8):
    twelve = twelve_bit_frame()
    auto = Segmenter(tiny_int8).segment(twelve)
    told = Segmenter(tiny_int8, bit_depth="12").segment(twelve)
    as8 = Segmenter(tiny_int8).segment(as_eight(twelve))
    assert auto.bit_depth == told.bit_depth == 12 and as8.bit_depth == 8
    assert np.array_equal(auto.mask, told.mask) and np.array_equal(auto.mask, as8.mask)

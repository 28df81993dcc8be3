"""--ignore-mask: the rover's own hardware in view is class 0, out of the class shares and
the overlay's colours; bad masks fail with one line before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN, save_png
from PIL import Image
from typer.testing import CliRunner

from marsedge.edge_runtime import ImageError, Segmenter, SegmenterOptions
from marsedge.edge_runtime.cli import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="marsedge-run")


@pytest.fixture
def frame(tmp_path):
    return save_png(tmp_path / "f.png", np.array(Image.open(GOLDEN / "frame0.png")))


@pytest.fixture
def deck(tmp_path):
    """A small mask (any size is resized to the frame): the bottom quarter is the deck."""
    mask = np.zeros((16, 28), np.uint8)
    mask[12:] = 255
    return save_png(tmp_path / "deck.png", mask)


def test_hardware_pixels_are_unlabeled_and_out_of_the_shares(tiny_int8, frame, deck, tmp_path):
    plain = run(frame, "--out", tmp_path / "plain", "--model", tiny_int8, "--json")
    masked = run(frame, "--out", tmp_path / "out", "--model", tiny_int8, "--ignore-mask", deck, "--json")
    assert plain.exit_code == masked.exit_code == 0, masked.stderr
    record = json.loads(masked.stdout)
    before = np.array(Image.open(tmp_path / "plain" / "f_mask.png"))
    after = np.array(Image.open(tmp_path / "out" / "f_mask.png"))
    assert (after[120:] == 0).all() and np.array_equal(after[:120], before[:120])  # 160 rows: deck from 120
    assert record["ignored_fraction"] == pytest.approx(0.25)
    terrain = before[:120]
    for class_id, name in enumerate(("unlabeled", "soil", "bedrock", "sand", "big_rock")):
        assert record["class_fractions"][name] == pytest.approx((terrain == class_id).mean(), abs=1e-5)
    grey = np.array(Image.open(frame))
    overlay = np.array(Image.open(tmp_path / "out" / "f_overlay.png"))
    assert (overlay[120:160] == grey[120:, :, None]).all()  # the deck is not tinted
    assert not (overlay[:120] == grey[:120, :, None]).all()
    certainty = Segmenter(tiny_int8, ignore_mask=deck).segment(grey).confidence
    assert (certainty[120:] == 0).all() and (certainty[:120] > 0).all()
    assert json.loads((tmp_path / "out" / "f.json").read_text())["mask_settings"]["ignore_mask_sha256"]


def test_the_api_takes_an_array_or_a_path(tiny_int8, deck, golden_frame):
    from_path = Segmenter.from_options(SegmenterOptions(model=tiny_int8, ignore_mask=deck)).segment(golden_frame)
    array = np.array(Image.open(deck))
    from_array = Segmenter(tiny_int8, ignore_mask=array).segment(golden_frame)
    assert np.array_equal(from_path.mask, from_array.mask) and from_path.class_fractions == from_array.class_fractions
    with pytest.raises(ImageError, match="ignore mask"):
        Segmenter(tiny_int8, ignore_mask=np.zeros((0, 3)))


@pytest.mark.parametrize(
    "content, message",
    [(b"not an image at all", "not a PNG or JPEG image"), (None, "no such file"), (b"\x89PNG\r\n\x1a\n", "corrupt")],
)
def test_a_bad_mask_is_one_line_and_nothing_is_written(tiny_int8, frame, tmp_path, content, message):
    bad = tmp_path / "bad.png"
    if content is not None:
        bad.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.json").write_text("{}")  # outputs of an earlier run are kept
    result = run(frame, "--out", out, "--model", tiny_int8, "--ignore-mask", bad)
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {bad}: --ignore-mask: ") and message in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["earlier.json"]

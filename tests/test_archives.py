"""Frames from PDS products and ROS 2 bags: the masks are byte-identical to those of the
same pixels given as PNG, outputs carry the product's or message's identity, and bad
archives are one line each.

The products and bags are built here (tools/make_archives.py) from the sample NavCam
frames in ../shared/data/samples, or from a generated frame where that is absent. Tests
needing ``pdr`` (the [pds] extra) or ``rosbags`` (the [ros] extra) skip without them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, SAMPLES, load_tool, save_png
from PIL import Image
from typer.testing import CliRunner

from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.sources.bitdepth import samples_to_gray8

archives = load_tool("make_archives")
TINY = DATA / "tiny_int8.tflite"
TOPIC = archives.TOPIC


@pytest.fixture(scope="module")
def frames() -> list[tuple[str, np.ndarray]]:
    """Two NavCam frames (name, uint8 grey): samples, or generated terrain."""
    found = sorted(SAMPLES.glob("*.png"))[:2] if SAMPLES.is_dir() else []
    if found:
        return [(p.stem, np.asarray(Image.open(p).convert("L"))) for p in found]
    rng = np.random.default_rng(35)
    y, x = np.mgrid[0:96, 0:128]
    made = []
    for i in range(2):
        base = 110 + 50 * np.sin(x / (7.0 + i)) * np.cos(y / 11.0) + rng.normal(0, 12, (96, 128))
        made.append((f"NLB_TEST_{i:04d}", np.clip(base, 0, 255).astype(np.uint8)))
    return made


@pytest.fixture
def pdr():
    return pytest.importorskip("pdr")


@pytest.fixture
def rosbags():
    return pytest.importorskip("rosbags")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args] + ["--model", str(TINY), "--no-overlay"])


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def png_masks(frames, folder: Path, out: Path) -> dict[str, bytes]:
    """Masks of the frames given as PNG: name -> mask PNG bytes."""
    folder.mkdir()
    for name, image in frames:
        save_png(folder / f"{name}.png", image)
    result = run(folder, "--out", out)
    assert result.exit_code == 0, result.output
    return {name: (out / f"{name}_mask.png").read_bytes() for name, _ in frames}


# PDS products ------------------------------------------------------------------------------


def _attached(folder, name, image):
    return archives.pds3_attached(folder / f"{name}.IMG", image)


def _attached_12bit(folder, name, image):
    return archives.pds3_attached(folder / f"{name}.IMG", image, sample_bits=12)


def _attached_16bit(folder, name, image):
    return archives.pds3_attached(folder / f"{name}.IMG", image, sample_bits=16)


def _prefixed(folder, name, image):
    return archives.pds3_attached(folder / f"{name}.IMG", image, line_prefix_bytes=12)


def _detached(folder, name, image):
    return archives.pds3_detached(folder / f"{name}.LBL", image)


def _pds4(folder, name, image):
    return archives.pds4_pair(folder / f"{name}.xml", image, product_id=name)


def _pds4_16bit(folder, name, image):
    return archives.pds4_pair(folder / f"{name}.xml", image, product_id=name, sample_bits=16)


PRODUCTS = {
    "pds3-attached": _attached,
    "pds3-12bit-in-16": _attached_12bit,
    "pds3-16bit": _attached_16bit,
    "pds3-line-prefix": _prefixed,
    "pds3-detached": _detached,
    "pds4": _pds4,
    "pds4-16bit": _pds4_16bit,
}


@pytest.mark.parametrize("kind", list(PRODUCTS))
def test_a_folder_of_products_gives_the_masks_of_the_same_pngs(pdr, frames, tmp_path, kind):
    expected = png_masks(frames, tmp_path / "png", tmp_path / "png-out")
    folder = tmp_path / kind
    folder.mkdir()
    for name, image in frames:
        PRODUCTS[kind](folder, name, image)
    out = tmp_path / "out"
    (folder / "notes.xml").write_text("<notes>not a PDS4 label</notes>\n")  # a folder's other XML is no frame
    result = run(folder, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(frames)  # a detached pair or a PDS4 pair is one frame, not two
    for name, _ in frames:
        stem = name.lower() if kind.startswith("pds4") else name  # PDS4 ids are lower-case LIDs
        assert (out / f"{stem}_mask.png").read_bytes() == expected[name], f"{kind}: {name}"
        source = json.loads((out / f"{stem}.json").read_text())["source"]
        assert source["product_id"] == stem
        assert (source["instrument_id"], source["sol"]) == ("NAV_LEFT_B", 1234)
        assert source["spacecraft_clock_start"] == "439225290.123"
        assert source["standard"] == ("PDS4" if kind.startswith("pds4") else "PDS3")
    assert records[0]["source"]["sample_bits"] == {"pds3-12bit-in-16": 12, "pds3-16bit": 16, "pds4-16bit": 16}.get(
        kind, 8
    )


@pytest.mark.parametrize("kind", [k for k in PRODUCTS if k.startswith("pds3")])
def test_the_plain_layout_reader_gives_the_pixels_pdr_gives(pdr, frames, tmp_path, kind):
    from marsedge.edge_runtime.sources.pds import plain_pds3_image

    name, image = frames[0]
    products = [PRODUCTS[kind](tmp_path, name, image)]
    products.append(archives.pds3_attached(tmp_path / "bands.IMG", np.stack([image, 255 - image]), sample_bits=12))
    for product in products:
        data = pdr.read(str(product))
        fast = plain_pds3_image(data, "IMAGE")
        assert fast is not None
        assert fast.dtype == data["IMAGE"].dtype and np.array_equal(fast, data["IMAGE"]), product.name


def test_a_multiband_product_segments_band_1_or_the_band_asked(pdr, frames, tmp_path):
    (name, image), (_, other) = frames
    if other.shape != image.shape:
        other = np.resize(other, image.shape)
    product = archives.pds3_attached(tmp_path / "rgb.IMG", np.stack([image, other, 255 - image]), product_id=name)
    expected = png_masks([(name, image), ("second", other)], tmp_path / "png", tmp_path / "png-out")
    first = run(product, "--out", tmp_path / "a")
    second = run(product, "--out", tmp_path / "b", "--band", "2")
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert (tmp_path / "a" / f"{name}_mask.png").read_bytes() == expected[name]
    assert (tmp_path / "b" / f"{name}_mask.png").read_bytes() == expected["second"]
    beyond = run(product, "--out", tmp_path / "c", "--band", "4")
    assert beyond.exit_code == 1 and errors(beyond) == [f"error: {product}: has 3 band(s); --band 4 is out of range"]


def test_a_label_that_displays_mirrored_is_flipped_upright(pdr, frames, tmp_path):
    name, image = frames[0]
    expected = png_masks([(name, image)], tmp_path / "png", tmp_path / "png-out")
    display = "  SAMPLE_DISPLAY_DIRECTION = LEFT\r\n  LINE_DISPLAY_DIRECTION = UP\r\n"
    flipped = archives.pds3_attached(tmp_path / "f.IMG", image[::-1, ::-1], product_id=name, image_extra=display)
    result = run(flipped, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / f"{name}_mask.png").read_bytes() == expected[name]


def test_twelve_bits_fill_the_grey_range():
    words = np.array([[0, 1, 2048, 4095, 5000]], dtype=">u2")
    assert samples_to_gray8(words, 12).tolist() == [[0, 0, 128, 255, 255]]
    assert samples_to_gray8(words, None).tolist() == samples_to_gray8(words, 16).tolist() == [[0, 0, 8, 16, 19]]
    assert samples_to_gray8(np.array([[-5, 300]], np.int16), 12).tolist() == [[0, 19]]
    from marsedge.edge_runtime.grey import to_gray8

    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    assert np.array_equal(samples_to_gray8(every), to_gray8(every))  # 16 bits: as a 16-bit PNG
    with pytest.raises(Exception, match="float32 samples are not supported"):
        samples_to_gray8(np.zeros((2, 2), np.float32))


# Bit depth: archive samples through --bit-depth, the rule 16-bit PNGs follow ----------------


def twelve_bit(image: np.ndarray) -> np.ndarray:
    """The 12-bit levels (native uint16) a 12-bit product stores for an 8-bit frame."""
    return archives.samples_of(image, 12).astype(np.uint16)


def test_archive_samples_and_16_bit_pngs_share_one_rounding_rule():
    from marsedge.edge_runtime.grey import frame_to_gray8, levels_to_gray8

    for depth in (10, 12, 16):
        every = np.arange(1 << depth, dtype=np.uint32).astype(np.uint16).reshape(1, -1)
        png, used = frame_to_gray8(every, depth)  # what a 16-bit PNG read with --bit-depth DEPTH gives
        assert used == depth and np.array_equal(samples_to_gray8(every, depth), png)
        assert np.array_equal(levels_to_gray8(every, depth), png)
        ends = png[0, [0, -1]].tolist()
        assert ends == [0, 255] and np.all(np.diff(png[0].astype(int)) >= 0)
    words = np.array([[0, 2048, 4095, 5000]], dtype=np.uint16)
    # a declared 12 bits (auto): levels above them clip; a given depth overrides the label
    assert frame_to_gray8(words, "auto", 12)[0].tolist() == [[0, 128, 255, 255]]
    overridden, depth = frame_to_gray8(words, 16, 12)
    assert depth == 16 and overridden.tolist() == [[0, 8, 16, 19]]
    with pytest.raises(Exception, match="values up to 5000, above the 4095 of 12-bit"):
        frame_to_gray8(words, 12, 12)
    # no declaration: the 16-bit auto rule (maximum <= 4095: 12-bit)
    assert frame_to_gray8(words[:, :3], "auto", None)[1] == 12


def test_a_12_bit_product_gives_the_masks_of_the_same_frame_as_12_in_16_png(pdr, frames, tmp_path):
    pngs, products = tmp_path / "png", tmp_path / "products"
    pngs.mkdir()
    products.mkdir()
    for name, image in frames:
        save_png(pngs / f"{name}.png", twelve_bit(image))  # a 16-bit PNG holding 12-bit levels
        archives.pds3_attached(products / f"{name}.IMG", image, sample_bits=12)  # SAMPLE_BIT_MASK: 12 bits
        archives.pds4_pair(products / f"{name}4.xml", image, product_id=f"{name}4", sample_bits=12)  # undeclared
    png = run(pngs, "--out", tmp_path / "png-out", "--json")
    assert png.exit_code == 0, png.output
    assert {json.loads(line)["bit_depth"] for line in png.stdout.splitlines()} == {12}
    result = run(products, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    records = {Path(r["outputs"]["mask"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert len(records) == 2 * len(frames)
    for name, _ in frames:
        expected = (tmp_path / "png-out" / f"{name}_mask.png").read_bytes()
        assert (tmp_path / "out" / f"{name}_mask.png").read_bytes() == expected, name
        assert (tmp_path / "out" / f"{name.lower()}4_mask.png").read_bytes() == expected, f"{name} (PDS4)"
        pds3, pds4 = records[f"{name}_mask.png"], records[f"{name.lower()}4_mask.png"]
        assert (pds3["bit_depth"], pds3["bit_depth_from"], pds3["source"]["sample_bits"]) == (12, "label", 12)
        assert pds4["bit_depth"] == 12 and "bit_depth_from" not in pds4  # guessed from the maximum
        assert pds3["mask_settings"]["bit_depth"] == "auto"
    # the once-per-run notice is for the guessed depth (the PDS4 products), not the label's
    notes = [line for line in result.stderr.splitlines() if "are read as 12-bit" in line]
    assert len(notes) == 1 and "4.xml" in notes[0]


def test_bit_depth_overrides_a_label(pdr, frames, tmp_path):
    name, image = frames[0]
    save_png(tmp_path / "frame.png", twelve_bit(image))
    product = archives.pds3_attached(tmp_path / f"{name}.IMG", image, sample_bits=12)
    png = run(tmp_path / "frame.png", "--out", tmp_path / "png-out", "--bit-depth", "16")
    assert png.exit_code == 0, png.output
    result = run(product, "--out", tmp_path / "out", "--bit-depth", "16", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["bit_depth"] == 16 and "bit_depth_from" not in record and record["source"]["sample_bits"] == 12
    assert record["mask_settings"]["bit_depth"] == 16
    assert (tmp_path / "out" / f"{name}_mask.png").read_bytes() == (
        tmp_path / "png-out" / "frame_mask.png"
    ).read_bytes()
    # a depth the samples exceed: one line naming the product, nothing written for it
    low = run(product, "--out", tmp_path / "low", "--bit-depth", "8")
    assert low.exit_code == 1 and "Traceback" not in low.output
    lines = errors(low)
    assert len(lines) == 1 and lines[0].startswith(f"error: {product}: 16-bit frame has values up to ")
    assert "(bit depth 8)" in lines[0] and not list((tmp_path / "low").glob("*_mask.png"))


def test_a_mono16_bag_of_12_bit_levels_follows_the_bit_depth(rosbags, frames, tmp_path):
    levels = [twelve_bit(image) for _, image in frames]
    bag = archives.write_bag(tmp_path / "bag", levels, ("mono16",))
    pngs = tmp_path / "png"
    pngs.mkdir()
    for i, frame in enumerate(levels):
        save_png(pngs / f"{i}.png", frame)
    for depth in ("auto", "16"):
        png = run(pngs, "--out", tmp_path / f"png-{depth}", "--bit-depth", depth)
        assert png.exit_code == 0, png.output
        result = run(bag, "--out", tmp_path / f"out-{depth}", "--bit-depth", depth, "--json")
        assert result.exit_code == 0, result.output
        assert {json.loads(line)["bit_depth"] for line in result.stdout.splitlines()} == {12 if depth == "auto" else 16}
        for i in range(len(levels)):
            got = (tmp_path / f"out-{depth}" / f"{1_700_000_000 + i}.000000005_mask.png").read_bytes()
            assert got == (tmp_path / f"png-{depth}" / f"{i}_mask.png").read_bytes(), (depth, i)


def test_batch_takes_a_products_bit_depth_and_redoes_it_under_another(pdr, rosbags, frames, tmp_path):
    pytest.importorskip("pyarrow")
    import hashlib

    from marsedge.cluster.batch import SegmentFrames, frame_state, list_frames
    from marsedge.edge_runtime import Segmenter, SegmenterOptions

    name, image = frames[0]
    product = archives.pds3_attached(tmp_path / f"{name}.IMG", image, sample_bits=12)
    bag = archives.write_bag(tmp_path / "bag", [twelve_bit(image)], ("mono16",))
    listed, problems = list_frames([str(product), str(bag)])
    assert problems == [] and [f.stem for f in listed] == [name, "1700000000.000000005"]
    content = TINY.read_bytes()
    names = ["unlabeled", "soil", "bedrock", "sand", "big_rock"]
    out = tmp_path / "out"
    out.mkdir()

    def actor(depth):
        return SegmentFrames(
            SegmenterOptions(model=TINY, threads=1, bit_depth=depth), [hashlib.sha256(content).hexdigest(), content],
            str(out), False, None, names, True,
        )  # fmt: skip

    auto = actor("auto")
    rows = [auto.one(0, listed[0].path, listed[0].stem), auto.one_message(listed[1])]
    assert [r["status"] for r in rows] == ["segmented"] * 2, rows
    assert (rows[0]["bit_depth"], rows[0]["bit_depth_from"], rows[0]["option_bit_depth"]) == (12, "label", "auto")
    assert (rows[1]["bit_depth"], rows[1]["bit_depth_from"]) == (12, None)
    assert (rows[0]["product_id"], rows[0]["sol"], rows[1]["topic"]) == (name, 1234, TOPIC)
    assert rows[0]["model_sha256"] == hashlib.sha256(content).hexdigest() and rows[0]["mean_confidence"] > 0
    assert (out / f"{name}_confidence.png").is_file()
    settings = Segmenter(TINY, threads=1).mask_settings()
    assert [frame_state(f, out, False, settings, True) for f in listed] == ["done", "done"]
    other = Segmenter(TINY, threads=1, bit_depth=16).mask_settings()
    assert [frame_state(f, out, False, other, True) for f in listed] == ["other settings"] * 2
    redone = actor(16).one(0, listed[0].path, listed[0].stem)
    assert (redone["status"], redone["bit_depth"], redone["option_bit_depth"]) == ("segmented", 16, "16")
    assert frame_state(listed[0], out, False, other, True) == "done"


def test_batch_redoes_a_multiband_product_under_another_band(pdr, frames, tmp_path):
    pytest.importorskip("pyarrow")
    from marsedge.cluster.batch import Frame, frame_state
    from marsedge.edge_runtime import Segmenter
    from marsedge.edge_runtime.batch import segment_file
    from marsedge.edge_runtime.sources import SourceOptions

    planes = np.stack([frames[0][1], frames[1][1]])
    product = archives.pds3_attached(tmp_path / "multi.IMG", planes, product_id="MULTI")
    segmenter = Segmenter(TINY, threads=1)
    out = tmp_path / "out"
    out.mkdir()
    segment_file(segmenter, product, out, "MULTI", overlay=False, source=SourceOptions(band=2))
    frame = Frame(0, str(product), "MULTI")
    settings = segmenter.mask_settings()
    assert frame_state(frame, out, False, settings, band=2) == "done"
    assert frame_state(frame, out, False, settings, band=None) == "other settings"


def test_without_pdr_one_line_names_the_extra(frames, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pdr", None)  # import pdr raises ImportError
    for name, image in frames:
        archives.pds3_attached(tmp_path / f"{name}.IMG", image)
    save_png(tmp_path / "plain.png", frames[0][1])
    result = run(tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = errors(result)
    assert len(lines) == 1 and "needs the [pds] extra" in lines[0] and "pip install 'marsedge[pds]'" in lines[0]
    assert f"1 image segmented, {len(frames)} failures" in result.stdout


def test_without_rosbags_one_line_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rosbags", None)
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    result = run(bag, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert errors(result) == [
        f"error: {bag}: reading ROS bags needs the [ros] extra (rosbags is not installed): pip install 'marsedge[ros]'"
    ]


def test_the_edge_install_pulls_neither_reader_and_make_test_installs_both():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith(("pdr", "rosbags"))]
    extras = project["optional-dependencies"]
    assert [d for d in extras["pds"] if d.startswith("pdr")] and [d for d in extras["ros"] if d.startswith("rosbags")]
    install = next(line for line in (root / "Makefile").read_text().splitlines() if "pip install -q -e" in line)
    assert "pds" in install and "ros" in install


def test_a_label_declaring_too_many_pixels_is_refused_before_reading(pdr, frames, tmp_path):
    name, image = frames[0]
    product = archives.pds3_attached(tmp_path / f"{name}.IMG", image)
    result = run(product, "--out", tmp_path / "out", "--max-pixels", "1000")
    height, width = image.shape
    assert result.exit_code == 1
    assert errors(result) == [
        f"error: {product}: {width}x{height} image has {width * height} pixels, above the limit of 1000 (--max-pixels)"
    ]


def test_eval_reads_a_labelled_folder_of_products(pdr, frames, tmp_path):
    from marsedge.train.data import load_tiles

    png, pds = tmp_path / "png", tmp_path / "pds"
    png.mkdir(), pds.mkdir()
    for name, image in frames:
        mask = (image // 64).astype(np.uint8)  # any class ids 0..3
        save_png(png / f"{name}.png", image)
        save_png(png / f"{name}_mask.png", mask)
        save_png(pds / f"{name}_mask.png", mask)
        archives.pds3_detached(pds / f"{name}.LBL", image)
    a, b = load_tiles(png), load_tiles(pds)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert b.names == [f"{name}.LBL" for name, _ in frames]


def test_a_watched_folder_takes_a_detached_pair_once_both_are_complete(pdr, frames, tmp_path):
    from marsedge.edge_runtime.watch import FrameTracker

    name, image = frames[0]
    archives.pds3_detached(tmp_path / f"{name}.LBL", image)
    archives.pds3_attached(tmp_path / "attached.IMG", image)
    tracker = FrameTracker(tmp_path)
    assert tracker.poll() == []  # nothing is stable yet
    ready = sorted(path.name for path, _ in tracker.poll())
    assert ready == sorted([f"{name}.LBL", "attached.IMG"])  # the detached .IMG is not a frame of its own


def test_a_watch_segments_products_named_by_their_ids_and_again_when_the_data_changes(pdr, frames, tmp_path):
    import threading

    from marsedge.edge_runtime import Segmenter
    from marsedge.edge_runtime.watch import JOURNAL_NAME, FrameTracker, Journal, watch

    (name, image), (_, other) = frames
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir(), out.mkdir()
    archives.pds3_detached(incoming / "pair.LBL", image, product_id=name)
    archives.pds4_pair(incoming / "four.xml", image, product_id="nlb_pds4_frame")
    segmenter = Segmenter(TINY)

    def run_for(polls: int) -> list:
        """The events of a watch stopped at its ``polls``-th look at the folder (a frame
        is ready at the second look): deterministic, no sleeping."""
        stop, count = threading.Event(), 0
        original = FrameTracker.poll

        def poll(tracker):
            nonlocal count
            count += 1
            if count >= polls:
                stop.set()
            return original(tracker)

        FrameTracker.poll = poll  # type: ignore[method-assign]
        try:
            return list(
                watch(segmenter, incoming, out, stop, poll_interval=0, journal=Journal.open(out / JOURNAL_NAME))
            )
        finally:
            FrameTracker.poll = original  # type: ignore[method-assign]

    first = run_for(3)
    assert sorted((e.kind, e.path.name) for e in first) == [("segmented", "four.xml"), ("segmented", "pair.LBL")]
    assert (out / f"{name}_mask.png").is_file() and (out / "nlb_pds4_frame_mask.png").is_file()
    assert run_for(3) == []  # journaled: not segmented again
    (incoming / "pair.IMG").write_bytes(archives.samples_of(other).tobytes())  # new data, same label
    again = run_for(3)
    assert [(e.kind, e.path.name) for e in again] == [("segmented", "pair.LBL")]


# ROS 2 bags --------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_bag_gives_the_masks_of_the_same_pngs_and_a_bag_of_masks(rosbags, frames, tmp_path, storage):
    images = [image for _, image in frames]
    encodings = ("mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8", "png", "jpeg")
    raw = len(encodings) - 2
    sequence = [images[i % len(images)] for i in range(len(encodings))]
    bag = archives.write_bag(tmp_path / "bag", sequence, encodings, storage=storage)
    # the same pixels as files: PNG for the raw encodings, the very JPEG bytes for jpeg
    pngs = tmp_path / "png"
    pngs.mkdir()
    for i, (image, encoding) in enumerate(zip(sequence, encodings)):
        if encoding == "jpeg":
            message = archives.image_message(rosbags_typestore(), image, "jpeg", 0)
            (pngs / f"{i}.jpg").write_bytes(bytes(message.data))
        elif encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):  # the bag holds the RGB frame colour_of makes
            save_png(pngs / f"{i}.png", archives.colour_of(image))
        else:
            save_png(pngs / f"{i}.png", image)
    assert run(pngs, "--out", tmp_path / "png-out").exit_code == 0
    result = run(bag, "--topic", TOPIC, "--out", tmp_path / "out", "--bag-out", tmp_path / "masks", "--json")
    # CompressedImage messages are on TOPIC/compressed: a second run reads them
    assert result.exit_code == 0, result.output
    compressed = run(bag, "--topic", TOPIC + "/compressed", "--out", tmp_path / "out")
    assert compressed.exit_code == 0, compressed.output
    for i, encoding in enumerate(encodings):
        stem = f"{1_700_000_000 + i}.000000005"
        png_name = f"{i}_mask.png"
        assert (tmp_path / "out" / f"{stem}_mask.png").read_bytes() == (tmp_path / "png-out" / png_name).read_bytes(), (
            encoding
        )
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["source"]["encoding"] for r in records] == list(encodings[:raw])
    assert records[0]["source"]["stamp"] == {"sec": 1_700_000_000, "nanosec": 5}
    assert records[0]["source"]["frame_id"] == "navcam_left" and records[0]["input"] == f"{bag}#{TOPIC}/0"
    # the bag of masks: one mono8 Image per message, same header and log time
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "masks"]) as reader:
        assert [c.topic for c in reader.connections] == [TOPIC + "/marsedge/mask"]
        written = [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()]
    assert storage == "mcap" or any((tmp_path / "masks").glob("*.db3"))
    assert storage == "sqlite3" or any((tmp_path / "masks").glob("*.mcap"))
    assert len(written) == raw
    for i, (timestamp, message) in enumerate(written):
        assert timestamp == (1_700_000_000 + i) * 10**9 + 5
        assert (message.header.stamp.sec, message.header.stamp.nanosec) == (1_700_000_000 + i, 5)
        assert message.header.frame_id == "navcam_left" and message.encoding == "mono8"
        mask = np.asarray(Image.open(tmp_path / "out" / f"{1_700_000_000 + i}.000000005_mask.png"))
        assert np.array_equal(message.data.reshape(message.height, message.width), mask)


def rosbags_typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def test_a_missing_topic_lists_the_image_topics_in_one_line(rosbags, frames, tmp_path):
    bag = archives.write_bag(tmp_path / "bag", [frames[0][1]], ("mono8", "png"), extra_topics=True)
    result = run(bag, "--topic", "/nope", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert errors(result) == [
        f"error: {bag}: no image topic /nope in this bag; its image topics: {TOPIC} (Image, 1 messages), "
        "/navcam/right/image_raw (Image, 1 messages)"
    ]
    several = run(bag, "--out", tmp_path / "out")
    assert "several image topics, choose one with --topic" in errors(several)[0]


def test_a_corrupt_message_is_one_line_and_the_bag_goes_on(rosbags, frames, tmp_path):
    images = [frames[i % len(frames)][1] for i in range(4)]
    bag = archives.write_bag(tmp_path / "bag", images, ("mono8",), storage="mcap", corrupt=(1,))
    result = run(bag, "--out", tmp_path / "out", "--bag-out", tmp_path / "masks")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = errors(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bag}: message 1: cannot deserialise the message")
    assert "3 images segmented, 1 failure" in result.stdout
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 3
    assert (tmp_path / "masks" / "metadata.yaml").is_file()


def test_bag_out_must_be_new_and_needs_a_bag(rosbags, frames, tmp_path):
    save_png(tmp_path / "a.png", frames[0][1])
    taken = tmp_path / "taken"
    taken.mkdir()
    exists = run(tmp_path / "a.png", "--out", tmp_path / "out", "--bag-out", taken)
    assert exists.exit_code == 2 and "exists already" in errors(exists)[0]
    no_bag = run(tmp_path / "a.png", "--out", tmp_path / "out", "--bag-out", tmp_path / "new")
    assert no_bag.exit_code == 2 and "--bag-out needs a bag INPUT" in errors(no_bag)[0]


# marsedge batch: listing and actors (Ray itself is exercised by tests/test_cluster.py) --------


def test_batch_lists_a_bag_per_message_and_an_actor_segments_one(rosbags, pdr, frames, tmp_path):
    pytest.importorskip("pyarrow")
    import hashlib

    from marsedge.cluster.batch import SegmentFrames, list_frames, write_mask_bag
    from marsedge.edge_runtime import SegmenterOptions

    images = [image for _, image in frames]
    bag = archives.write_bag(tmp_path / "bag", images * 2, ("mono8",))
    product = archives.pds3_attached(tmp_path / "p.IMG", images[0], product_id="NLB_PRODUCT")
    listed, problems = list_frames([str(bag), str(product)])
    assert problems == []
    assert [f.stem for f in listed] == [f"{1_700_000_000 + i}.000000005" for i in range(4)] + ["NLB_PRODUCT"]
    assert [f.message for f in listed] == [0, 1, 2, 3, None]
    content = TINY.read_bytes()
    names = ["unlabeled", "soil", "bedrock", "sand", "big_rock"]
    actor = SegmentFrames(
        SegmenterOptions(model=TINY, threads=1), [hashlib.sha256(content).hexdigest(), content],
        str(tmp_path / "out"), False, None, names,
    )  # fmt: skip
    (tmp_path / "out").mkdir()
    rows = [actor.one_message(f) for f in listed[:4]] + [actor.one(4, listed[4].path, listed[4].stem)]
    assert [r["status"] for r in rows] == ["segmented"] * 5, rows
    assert rows[2]["topic"] == TOPIC and rows[2]["message"] == 2 and rows[2]["stamp"] == "1700000002.000000005"
    assert (rows[4]["product_id"], rows[4]["instrument_id"], rows[4]["sol"]) == ("NLB_PRODUCT", "NAV_LEFT_B", 1234)
    expected = png_masks([("p", images[0])], tmp_path / "png", tmp_path / "png-out")
    assert (tmp_path / "out" / "NLB_PRODUCT_mask.png").read_bytes() == expected["p"]
    assert (tmp_path / "out" / "1700000002.000000005_mask.png").read_bytes() == expected["p"]
    written = write_mask_bag(tmp_path / "masks", listed, rows, tmp_path / "out")
    from rosbags.highlevel import AnyReader

    with AnyReader([written]) as reader:
        assert sum(1 for _ in reader.messages()) == 4
    shutil.rmtree(tmp_path / "out")


@pytest.mark.slow
def test_marsedge_batch_on_ray_segments_a_bag_and_products_as_marsedge_run(rosbags, pdr, frames, tmp_path):
    pytest.importorskip("ray")
    import os
    import subprocess

    import pyarrow.parquet as pq

    images = [image for _, image in frames]
    bag = archives.write_bag(tmp_path / "bag", images, ("mono8", "rgb8"), storage="mcap")
    products = tmp_path / "products"
    products.mkdir()
    for name, image in frames:
        archives.pds3_detached(products / f"{name}.LBL", image)
    reference = run(bag, products, "--out", tmp_path / "reference")
    assert reference.exit_code == 0, reference.output
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "marsedge.cli", "batch", str(bag), str(products), "--out", str(tmp_path / "out"),
               "--model", str(TINY), "--address", "local", "--workers", "1", "--bag-out", str(tmp_path / "masks")]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    masks = sorted(p.name for p in (tmp_path / "reference").glob("*_mask.png"))
    assert len(masks) == 2 * len(frames)
    for name in masks:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    rows = pq.read_table(tmp_path / "out" / "marsedge-batch.parquet").to_pylist()
    assert [r["topic"] for r in rows] == [TOPIC] * len(frames) + [None] * len(frames)
    assert [r["product_id"] for r in rows[len(frames) :]] == [name for name, _ in frames]
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "masks"]) as reader:
        assert sum(1 for _ in reader.messages()) == len(frames)

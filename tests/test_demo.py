"""`make demo`'s picture: frame | bundled int8 model | the toy model, one row per frame."""

from __future__ import annotations

import numpy as np
from conftest import save_png
from PIL import Image

from marsedge import demo
from marsedge.edge_runtime.segmenter import DEFAULT_MODEL


def test_comparison_picture_shows_each_frame_beside_each_models_overlay(tiny_int8, tmp_path):
    rng = np.random.default_rng(0)
    frames = [save_png(tmp_path / f"f{i}.png", rng.integers(0, 256, (96, 160), dtype=np.uint8)) for i in range(2)]
    columns = demo.picture_columns(tiny_int8)
    assert [model for _, model in columns] == [DEFAULT_MODEL, tiny_int8]
    assert (
        columns[0][0].startswith("bundled int8 model")
        and f"val mIoU {demo._val_miou(DEFAULT_MODEL):.3f}" in columns[0][0]
    )
    assert columns[1][0].startswith(f"demo model: {demo.EPOCHS} epochs, a toy")
    out = demo.comparison_picture(frames, columns, tmp_path / "pictures" / "comparison.png")
    picture = Image.open(out)
    assert picture.mode == "RGB"
    assert picture.width >= 3 * 160 and picture.height >= 2 * 96  # three columns, two rows
    pixels = np.asarray(picture)
    first_frame = pixels[40 : 40 + 96, 8 : 8 + 160, 0]  # the frame itself, grey, in the first cell
    assert np.array_equal(first_frame, np.asarray(Image.open(frames[0])))


def test_demo_banner_names_the_network_it_trains():
    assert demo._toy_shape().startswith("the default half-resolution U-Net (base_filters 24, depth 3)")

"""tools/robustness_eval.py: camera-like perturbations and their scores through the runtime."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import load_tool

pytest.importorskip("marsedge.train.tf_env")


def _tool():
    return load_tool("robustness_eval")


def test_perturbations_keep_tiles_uint8_and_move_labels_with_flips():
    tool = _tool()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 16, 24), dtype=np.uint8)
    masks = rng.integers(0, 5, (3, 16, 24), dtype=np.uint8)
    for name in tool.PERTURBATIONS:
        out, truth = tool.perturb(images, masks, name)
        assert out.dtype == np.uint8 and out.shape == images.shape, name
        if name == "left-right mirror":
            np.testing.assert_array_equal(truth, masks[:, :, ::-1])
        elif name == "upside down":
            np.testing.assert_array_equal(truth, masks[:, ::-1, :])
        else:
            np.testing.assert_array_equal(truth, masks)
    clean, _ = tool.perturb(images, masks, "clean")
    np.testing.assert_array_equal(clean, images)
    noisy = [tool.perturb(images, masks, "noise sigma 4", seed=s)[0] for s in (0, 0, 1)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert not np.array_equal(noisy[0], noisy[2])
    darker, _ = tool.perturb(images, masks, "darker (gain 0.7)")
    np.testing.assert_array_equal(darker, np.clip(np.rint(images * 0.7), 0, 255).astype(np.uint8))


def test_rows_score_every_perturbation_through_the_runtime(tiny_int8):
    tool = _tool()
    from marsedge.edge_runtime import Segmenter

    segmenter = Segmenter(tiny_int8)
    rng = np.random.default_rng(1)
    shape = (4, segmenter.tile_height, segmenter.tile_width)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    masks = rng.integers(0, 5, shape, dtype=np.uint8)
    results = tool.rows(tiny_int8, images, masks, threads=1)
    assert [name for name, _, _ in results] == list(tool.PERTURBATIONS)
    assert results[0][2] == 1.0  # clean against itself
    assert all(0.0 <= same <= 1.0 and 0.0 <= report["mean_iou"] <= 1.0 for _, report, same in results)
    text = tool.table(results, "tiny")
    assert text.count("\n") == len(results) + 1 and "| clean | " in text

"""marsedge compare: per-tile confusions add up, frames are drawn whole, the interval brackets the truth."""

from __future__ import annotations

import numpy as np

from marsedge.core.metrics import confusion_matrix, mean_iou, tile_confusions
from marsedge.evaluation import compare as tool


def _tiles(seed: int = 0, count: int = 40):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, (count, 8, 16)).astype(np.uint8)
    noisy = np.where(rng.random(truth.shape) < 0.3, rng.integers(1, 5, truth.shape), truth).astype(np.uint8)
    return truth, noisy


def test_tile_confusions_sum_to_the_split_confusion():
    truth, prediction = _tiles()
    per_tile = tile_confusions(truth, prediction)
    assert per_tile.shape == (40, 5, 5) and per_tile[:, 0].sum() == 0  # unlabelled truth skipped
    np.testing.assert_array_equal(per_tile.sum(axis=0), confusion_matrix(truth, prediction))


def test_same_model_is_never_ahead_and_a_better_one_always_is():
    truth, noisy = _tiles()
    worse = np.where(np.random.default_rng(1).random(truth.shape) < 0.3, 1, noisy).astype(np.uint8)
    confusions = [tile_confusions(truth, p) for p in (noisy, noisy, truth, worse)]
    rows = tool.compare(confusions, np.arange(40) // 2, resamples=200)
    same, perfect, bad = rows[1], rows[2], rows[3]
    assert same["delta"] == same["low"] == same["high"] == 0 and same["ahead"] == 0
    assert perfect["miou"] == 1.0 and perfect["low"] > 0 and perfect["ahead"] == 1.0
    assert bad["high"] < 0 and bad["low"] <= bad["delta"] <= bad["high"]
    assert rows[0]["miou"] == mean_iou(confusion_matrix(truth, noisy))


def test_a_draw_takes_both_tiles_of_a_frame():
    truth, noisy = _tiles(count=4)
    # tiles 0/1 perfect, 2/3 all wrong: each draw of whole frames gives 0/1 frames of each kind
    prediction = noisy.copy()
    prediction[:2] = truth[:2]
    prediction[2:] = np.where(truth[2:] == 1, 2, 1)
    scores = tool.bootstrap([tile_confusions(truth, prediction)], np.array([0, 0, 1, 1]), resamples=50)
    possible = {
        round(mean_iou(tile_confusions(truth[i], prediction[i]).sum(axis=0)), 9)
        for i in ([0, 1, 0, 1], [2, 3, 2, 3], [0, 1, 2, 3])
    }
    assert {round(s, 9) for s in scores[:, 0]} <= possible

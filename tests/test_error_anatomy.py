"""marsedge eval --anatomy: boundary bands, big-rock recall/precision, frame halves."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.evaluation import anatomy


def test_errors_only_on_a_boundary_vanish_when_the_band_is_left_out():
    masks = np.ones((2, 8, 8), np.uint8)
    masks[:, :, 4:] = 2  # soil | bedrock, a vertical boundary between columns 3 and 4
    masks[1, :2] = 0  # unlabeled rows: they neither count nor make a boundary error
    prediction = masks.copy()
    prediction[:, :, 3] = 2  # the column left of the boundary is called bedrock
    prediction[1, :2] = 3
    assert anatomy.interior(masks, 1)[0, 4, 0] and not anatomy.interior(masks, 1)[0, 4, 3]
    row = anatomy.boundary_rows(masks, prediction, bands=(1,))[0]
    # near a boundary: columns 3-4 of tile 0 (16 px); of tile 1's six labelled rows, columns 3-4
    # (12 px) and the rest of row 2, next to the unlabeled rows (6 px); 64 + 48 labelled px
    assert row["near_share"] == pytest.approx((16 + 12 + 6) / 112)
    assert row["error_inner"] == 0.0 and row["errors_near_share"] == 1.0
    assert row["miou_without_band"] == pytest.approx(1.0)


def test_big_rock_recall_precision_and_where_its_errors_go():
    masks = np.array([[[4, 4, 4, 4, 2, 2, 1, 0]]], np.uint8)
    prediction = np.array([[[4, 4, 2, 2, 4, 2, 4, 4]]], np.uint8)  # the last pixel is unlabeled: not counted
    row = anatomy.big_rock_row(masks, prediction)
    assert row["recall"] == pytest.approx(2 / 4) and row["precision"] == pytest.approx(2 / 4)
    assert row["missed_as"] == {"soil": 0, "bedrock": 2, "sand": 0}
    assert row["false_from"] == {"soil": 1, "bedrock": 1, "sand": 0}


def test_frame_halves_split_by_tile_index_parity():
    masks = np.ones((4, 2, 2), np.uint8)
    prediction = masks.copy()
    prediction[1] = 2  # tile index 7: a bottom half, all wrong
    reports = anatomy.halves(masks, prediction, np.array([4, 7, 10, 12]))
    assert reports["top"]["class_iou"]["soil"] == 1.0
    assert reports["bottom"]["class_iou"]["soil"] == 0.0

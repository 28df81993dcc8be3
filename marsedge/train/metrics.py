"""The IoU maths, kept importable here for older callers: see :mod:`marsedge.core.metrics`."""

from marsedge.core.metrics import (  # noqa: F401
    NUM_CLASSES,
    SCORED_CLASSES,
    class_iou,
    confusion_matrix,
    iou_report,
    mean_iou,
    pixel_agreement,
    score,
    tile_confusions,
)

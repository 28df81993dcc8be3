"""Quantisation-aware training and TFLite export of a trained run (``marsedge export``).

Needs the ``[train]`` extra. Scoring a .tflite without TensorFlow is
:mod:`marsedge.evaluation` (above this package) and the edge runtime's
:class:`~marsedge.edge_runtime.tile_model.TileModel`.
"""

from marsedge.export.convert import FORMATS, ExportError
from marsedge.export.pipeline import AccuracyGateError, ExportOptions, export_run, format_table

__all__ = ["FORMATS", "AccuracyGateError", "ExportError", "ExportOptions", "export_run", "format_table"]

"""Quantisation-aware training and TFLite export of a trained run (``marsedge export``).

Needs the ``[train]`` extra; :mod:`marsedge.export.evaluate` runs a .tflite without
TensorFlow.
"""
from marsedge.export.convert import FORMATS, ExportError
from marsedge.export.pipeline import AccuracyGateError, ExportOptions, export_run, format_table

__all__ = ["FORMATS", "AccuracyGateError", "ExportError", "ExportOptions", "export_run", "format_table"]

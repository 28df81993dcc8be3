"""Evaluation of a Keras run or a .tflite on labelled tiles (``marsedge eval``, ``marsedge
compare``, ``marsedge runs``).

Sits above :mod:`marsedge.train` and :mod:`marsedge.export` and is imported by neither.
Importing it does not import TensorFlow: a .tflite runs through the edge runtime's
:class:`~marsedge.edge_runtime.tile_model.TileModel`, and TensorFlow loads only to
evaluate a run directory's Keras model.
"""

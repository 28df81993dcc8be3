"""The one place that imports TensorFlow, with Keras 2 (tf_keras) for tfmot.

tensorflow-model-optimization 0.8.1 works only with Keras 2, so ``TF_USE_LEGACY_KERAS``
must be set before TensorFlow is first imported. Every module imports ``tf``, ``keras``
and ``tfmot`` from here.
"""
from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from marsedge.errors import MissingExtraError

try:
    import tensorflow as tf
    import tf_keras as keras
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingExtraError("train", "this command", exc.name or "tensorflow") from exc

try:
    import tensorflow_model_optimization as tfmot
except ImportError:  # pragma: no cover - training works without it, export does not
    tfmot = None

__all__ = ["tf", "keras", "tfmot", "require_tfmot"]


def require_tfmot():
    """Return the tfmot module or raise a clear error naming the extra to install."""
    if tfmot is None:
        raise MissingExtraError("train", "quantization-aware training", "tensorflow-model-optimization")
    return tfmot

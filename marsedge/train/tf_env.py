"""The one place that imports TensorFlow, with Keras 2 (tf_keras) for tfmot.

tensorflow-model-optimization 0.8.1 works only with Keras 2, so ``TF_USE_LEGACY_KERAS``
must be set before TensorFlow is first imported. Every module imports ``tf``, ``keras``
and ``tfmot`` from here.
"""

from __future__ import annotations

import logging
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from marsedge.core.native_stderr import native_stderr_to_log
from marsedge.errors import MissingExtraError

logger = logging.getLogger(__name__)

# Quiet unless asked: the CLI sets MARSEDGE_VERBOSE=1 for --verbose. Without it, TensorFlow's
# native log (CUDA cuInit errors on a CPU machine, oneDNN notices, "Sharding callback
# duration" lines) stays off, and what its import writes straight to stderr goes to the
# debug log. A TF_CPP_MIN_LOG_LEVEL set by the user is kept.
VERBOSE = os.environ.get("MARSEDGE_VERBOSE") == "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if VERBOSE else "3")


with native_stderr_to_log(logger, "TensorFlow", enabled=not VERBOSE):
    try:
        import tensorflow as tf
        import tf_keras as keras
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError("train", "this command", exc.name or "tensorflow") from exc
    tf.config.list_physical_devices()  # CUDA's probe (cuInit) happens here, not in the first epoch
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

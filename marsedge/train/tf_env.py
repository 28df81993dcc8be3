"""The one place that imports TensorFlow, with Keras 2 (tf_keras) for tfmot.

tensorflow-model-optimization 0.8.1 works only with Keras 2, so ``TF_USE_LEGACY_KERAS``
must be set before TensorFlow is first imported. Every module imports ``tf``, ``keras``
and ``tfmot`` from here.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from marsedge.errors import MissingExtraError

logger = logging.getLogger(__name__)

# Quiet unless asked: the CLI sets MARSEDGE_VERBOSE=1 for --verbose. Without it, TensorFlow's
# native log (CUDA cuInit errors on a CPU machine, oneDNN notices, "Sharding callback
# duration" lines) stays off, and what its import writes straight to stderr goes to the
# debug log. A TF_CPP_MIN_LOG_LEVEL set by the user is kept.
VERBOSE = os.environ.get("MARSEDGE_VERBOSE") == "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if VERBOSE else "3")


@contextlib.contextmanager
def _native_stderr_to_debug_log(enabled: bool) -> Iterator[None]:
    """Sends what native code writes to file descriptor 2 meanwhile to the debug log."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        enabled = False  # no usable fd 2 (embedded interpreter): leave stderr alone
    if not enabled:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace").strip()
            if text:
                logger.debug("TensorFlow said: %s", text)


with _native_stderr_to_debug_log(not VERBOSE):
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

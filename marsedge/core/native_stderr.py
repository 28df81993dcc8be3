"""What native libraries write straight to file descriptor 2, sent to a debug log instead.

The TFLite interpreter ("Created TensorFlow Lite XNNPACK delegate") and TensorFlow's import
(CUDA and oneDNN notices) write to the process's stderr from C++, past Python's
``sys.stderr``; the CLIs keep stderr for their own one-line messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger, label: str, enabled: bool = True) -> Iterator[None]:
    """Swaps file descriptor 2 for a temporary file meanwhile; what landed there is logged
    at debug level as ``"{label} said: ..."``. Leaves stderr alone where there is no usable
    descriptor 2 (an embedded interpreter) or when not ``enabled``."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
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
                logger.debug("%s said: %s", label, text)

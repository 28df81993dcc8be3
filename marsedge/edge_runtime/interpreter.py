"""The TFLite interpreter, from the lightest package that provides one.

Order: ``ai_edge_litert`` (LiteRT, the base dependency), ``tflite_runtime`` (what
32-bit ARM boards install instead, by a platform marker in pyproject.toml), then ``tensorflow.lite`` as a last resort on a development machine. The import
happens on first use, so reading metadata or images never pays for it.
"""

from __future__ import annotations

import functools
import logging
import platform
from typing import Any

import numpy as np

from marsedge.core.errors import first_line
from marsedge.core.native_stderr import native_stderr_to_log

from .errors import ModelError

logger = logging.getLogger(__name__)


@functools.cache
def interpreter_api() -> tuple[type, Any, str]:
    """Returns ``(Interpreter class, OpResolverType enum, package name)``."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "tflite_runtime"
    except ImportError:
        pass
    try:
        # Last resort only: a development machine with the [train] extra.
        import tensorflow as tf

        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, "tensorflow.lite"
    except ImportError:
        raise ModelError(no_interpreter_message()) from None


def no_interpreter_message(machine: str | None = None) -> str:
    """What to install when no interpreter package imports, for this CPU (one line)."""
    machine = machine or platform.machine()
    if machine.startswith(("armv7", "armv6")):  # 32-bit Raspberry Pi OS: LiteRT has no wheel
        package = "tflite-runtime (LiteRT has no 32-bit ARM wheel; see docs/pi.md)"
    else:
        package = "ai-edge-litert"
    return f"no TFLite interpreter (tried ai_edge_litert, tflite_runtime, tensorflow): pip install {package}"


def make_interpreter(model_content: bytes, threads: int | None = None, reference_kernels: bool = False) -> Any:
    """Builds an interpreter with tensors allocated.

    Args:
        model_content: the whole .tflite file (trailing metadata is ignored by TFLite).
        threads: CPU threads for the optimised kernels; None lets the interpreter choose.
        reference_kernels: use the builtin reference kernels (no XNNPACK): slower, but the
            same bits on x86_64 and aarch64.

    Raises:
        ModelError: the bytes are not a TFLite model the interpreter can run.
    """
    interpreter_cls, op_resolver, package = interpreter_api()
    kwargs: dict[str, Any] = {"model_content": model_content, "num_threads": threads}
    if reference_kernels:
        kwargs["experimental_op_resolver_type"] = op_resolver.BUILTIN_REF
    try:
        with native_stderr_to_log(logger, "interpreter"):  # e.g. "Created TensorFlow Lite XNNPACK delegate"
            interpreter = interpreter_cls(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"not a TFLite model the interpreter can run: {first_line(exc)}") from None
    logger.debug("interpreter from %s, threads=%s, reference kernels=%s", package, threads, reference_kernels)
    return interpreter


def input_lut(details: dict[str, Any], normalization: tuple[float, float] | None = None) -> np.ndarray:
    """Maps each grey level 0..255 straight to the value the input tensor wants.

    Args:
        details: the interpreter's input tensor details (dtype, quantization).
        normalization: ``(mean, std)`` when the model takes ``(level - mean) / std``
            (metadata ``input_normalization``); None when it takes the levels themselves.

    Raises:
        ModelError: an integer input tensor without a quantisation scale.
    """
    values = np.arange(256, dtype=np.float64)
    if normalization is not None:
        values = (values - normalization[0]) / normalization[1]
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return values.astype(np.float32)
    scale, zero_point = details["quantization"]
    if not scale > 0:
        raise ModelError("integer input tensor without a quantisation scale")
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, limits.min, limits.max).astype(dtype)

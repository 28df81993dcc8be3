"""Keras model -> TFLite bytes in each export format, and what the converted model holds.

Formats: ``float32``; ``float16`` (fp16 weights, float compute); ``dynamic`` (int8
weights, float activations); ``ptq`` (full-integer, calibrated on representative
training tiles); ``qat`` (full-integer from the fake-quantised QAT model). Both int8
formats take and return int8 tensors and must hold no float tensor at all.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from marsedge.core.errors import first_line
from marsedge.core.native_stderr import native_stderr_to_log
from marsedge.errors import MarsEdgeError

log = logging.getLogger(__name__)

FORMATS = ("float32", "float16", "dynamic", "ptq", "qat")
INT8_FORMATS = ("ptq", "qat")
PRECISIONS = {"float32": "float32", "float16": "float16", "dynamic": "dynamic", "ptq": "int8-ptq", "qat": "int8-qat"}
# Tensors an int8 model may keep in another integer type: biases and shapes.
_INTEGER_DTYPES = ("int8", "int32", "int64", "uint8", "int16")
# Highest op version LiteRT's reference resolver (BUILTIN_REF: the arm64 parity check, per-op
# profiling, ``reference_kernels=True``) registers, where the converter writes a higher one
# that the reference kernel runs all the same. register_ref.cc adds DEPTH_TO_SPACE at
# version 1 only, yet its Eval takes int8 like the optimised kernel; the converter marks int8
# depth-to-space version 2 (version 2 says no more than "int8 inputs").
REFERENCE_OP_VERSIONS = {"DEPTH_TO_SPACE": 1}


class ExportError(MarsEdgeError):
    """A model cannot be converted as asked (bad calibration data, float ops left in int8)."""


def parse_formats(text: str) -> tuple[str, ...]:
    """``"float32,qat"`` -> ``("float32", "qat")`` in canonical order.

    Raises:
        ExportError: an unknown format name (the message lists the known ones).
    """
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ExportError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return tuple(name for name in FORMATS if name in names)


def grey_ramp(height: int, width: int) -> np.ndarray:
    """A tile holding every grey level 0..255, so calibration pins the input range to 0..255
    (int8 input scale one grey level, 1/std once normalised: uint8 pixels map exactly)."""
    return np.tile(np.linspace(0.0, 255.0, width, dtype=np.float32), (height, 1))


def representative_dataset(
    tiles: np.ndarray, input_shape: tuple[int, int], normalization: tuple[float, float] | None = None
) -> Callable[[], Iterator[list]]:
    """The converter's calibration generator: a 0..255 ramp, then each tile as a batch of one.

    Args:
        tiles: ``(N, H, W)`` grey tiles, 0..255 (uint8 or float).
        input_shape: the model's ``(H, W)``.
        normalization: ``(mean, std)`` for a graph that takes normalised levels
            (``(level - mean) / std``); None for one that takes the levels.

    Raises:
        ExportError: the tiles are empty or not ``(N, H, W)`` of the model's size.
    """
    tiles = np.asarray(tiles)
    height, width = input_shape
    if tiles.ndim == 4 and tiles.shape[-1] == 1:
        tiles = tiles[..., 0]
    if tiles.ndim != 3 or tiles.shape[1:] != (height, width):
        raise ExportError(
            f"representative tiles have shape {tiles.shape}; the model takes (N, {height}, {width}) grey tiles"
        )
    if len(tiles) == 0:
        raise ExportError("no representative tiles to calibrate int8 ranges with")
    if tiles.min() < 0 or tiles.max() > 255:
        raise ExportError(f"representative tiles must hold grey levels 0..255, got {tiles.min()}..{tiles.max()}")
    ramp = grey_ramp(height, width)
    mean, std = normalization or (0.0, 1.0)

    def generate():
        for tile in (ramp, *tiles):  # the ramp sets the input range to exactly 0..255
            yield [((tile.astype(np.float32) - mean) / std).astype(np.float32)[None, ..., None]]

    return generate


def make_converter(
    model,
    fmt: str,
    input_shape: tuple[int, int],
    representative_tiles: np.ndarray | None = None,
    normalization: tuple[float, float] | None = None,
):
    """The ``TFLiteConverter`` set up for ``fmt`` (what :func:`to_tflite` converts with;
    ``tools/quant_debug.py`` hands it to TensorFlow's QuantizationDebugger).

    Raises:
        ExportError: unknown format, or missing or malformed representative tiles.
    """
    from marsedge.train.tf_env import tf

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    height, width = input_shape
    function = tf.function(lambda tile: model(tile, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([1, height, width, 1], tf.float32, name="tile"))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt in INT8_FORMATS:
        if representative_tiles is None:
            raise ExportError(f"{fmt}: int8 conversion needs representative tiles")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(representative_tiles, input_shape, normalization)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


def to_tflite(
    model,
    fmt: str,
    input_shape: tuple[int, int],
    representative_tiles: np.ndarray | None = None,
    normalization: tuple[float, float] | None = None,
) -> bytes:
    """Convert a Keras model (the QAT model for ``qat``) to TFLite bytes.

    ``normalization`` is the ``(mean, std)`` of a graph that takes normalised levels
    (``fold.split_input_normalization``): calibration tiles are normalised to match.

    The graph is traced for one tile ``(1, H, W, 1)``, so shapes are constants and no
    shape arithmetic reaches the device. The int8 formats always get a representative
    dataset, the QAT one too: a tensor without a fake-quant range is calibrated rather
    than left in float.

    Raises:
        ExportError: unknown format, missing or malformed representative tiles, a
            conversion failure, or float tensors left in an int8 model.
    """
    converter = make_converter(model, fmt, input_shape, representative_tiles, normalization)
    try:
        with native_stderr_to_log(log, "TFLite converter"):  # "fully_quantize: 0, inference_type: 6, ..."
            content = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise ExportError(f"{fmt}: TFLite conversion failed: {first_line(exc)}") from None
    content = cap_op_versions(content)
    if fmt in INT8_FORMATS:
        float_tensors = describe(content)["float_tensors"]
        if float_tensors:
            raise ExportError(
                f"{fmt}: the int8 model still holds float tensors ({', '.join(float_tensors[:5])}); "
                "a layer lacks a quantised kernel"
            )
    return content


def cap_op_versions(content: bytes, caps: dict[str, int] = REFERENCE_OP_VERSIONS) -> bytes:
    """``content`` with each op code in ``caps`` lowered to at most that version.

    Rewrites the 4-byte version field of the flatbuffer's OperatorCode in place: nothing
    else in the file moves. An op code whose version is stored implicitly (1) is left as it is.
    """
    import struct

    from tensorflow.lite.python import schema_py_generated as schema

    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    data = bytearray(content)
    model = schema.Model.GetRootAsModel(data, 0)
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        field = code._tab.Offset(8)  # noqa: SLF001 - vtable slot of OperatorCode.version
        if name in caps and field and code.Version() > caps[name]:
            struct.pack_into("<i", data, code._tab.Pos + field, caps[name])  # noqa: SLF001
    return bytes(data)


def _interpreter(content: bytes, delegates: bool):
    from marsedge.edge_runtime.interpreter import interpreter_api

    interpreter_cls, resolver, _ = interpreter_api()
    kind = resolver.AUTO if delegates else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with native_stderr_to_log(log, "interpreter"):  # "Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = interpreter_cls(model_content=content, experimental_op_resolver_type=kind, num_threads=1)
        interpreter.allocate_tensors()
    return interpreter


def describe(content: bytes) -> dict[str, Any]:
    """What a .tflite holds: input/output dtype and quantisation, op counts, float tensors,
    and which ops XNNPACK leaves to the builtin kernels (each one splits the delegated graph).
    """
    interpreter = _interpreter(content, delegates=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only way to list ops from Python
    counts = Counter(op["op_name"] for op in ops)
    dtype = lambda index: np.dtype(tensors[index]["dtype"]).name  # noqa: E731
    float_tensors = sorted({t["name"] for t in tensors.values() if np.dtype(t["dtype"]).name not in _INTEGER_DTYPES})

    def io(details: dict) -> dict:
        scale, zero_point = details["quantization"]
        return {
            "dtype": np.dtype(details["dtype"]).name,
            "shape": [int(d) for d in details["shape"]],
            "scale": float(scale),
            "zero_point": int(zero_point),
        }

    return {
        "input": io(interpreter.get_input_details()[0]),
        "output": io(interpreter.get_output_details()[0]),
        "ops": dict(sorted(counts.items())),
        "op_sequence": [op["op_name"] for op in ops],
        "float_ops": sorted(
            {op["op_name"] for op in ops if any(i in tensors and dtype(i) == "float32" for i in op["outputs"])}
        ),
        "float_tensors": [name for name in float_tensors if name],
        "not_delegated": _not_delegated(content),
    }


def _not_delegated(content: bytes) -> list[str]:
    """Op names (with their output tensor) that the default XNNPACK delegate does not take."""
    interpreter = _interpreter(content, delegates=True)
    ops = interpreter._get_ops_details()  # noqa: SLF001
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    plain = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in plain for t in op["outputs"]}
    by_index = {op["index"]: op for op in plain}
    covered: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer or producer[tensor] in covered:
                continue
            covered.add(producer[tensor])
            stack.extend(int(t) for t in by_index[producer[tensor]]["inputs"])
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return [
        f"{op['op_name']} ({tensors.get(int(op['outputs'][0]), '?')})"
        for op in plain
        if op["index"] not in covered and len(op["outputs"])
    ]

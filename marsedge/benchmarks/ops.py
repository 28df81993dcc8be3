"""What each op of a .tflite graph costs: MACs from the graph, time from single-op models.

LiteRT's Python API has no per-op profiler, and under XNNPACK a whole partition of the
graph is one delegate node, so the interpreter cannot say which op is slow. This module
measures each op *alone*: it rewrites the flatbuffer into a model holding that op only
(plus the ops that compute its constant inputs, e.g. a float16 weight's DEQUANTIZE, so
XNNPACK still sees static weights; such constant-only ops get no row of their own), feeds
it the values it meets in the full graph (recorded once with the reference kernels on a
seeded random input), and times ``invoke()`` with the same interpreter, thread count and
delegate as the runtime. It also records whether XNNPACK took the op (a DELEGATE node in
the single-op model) and how many XNNPACK partitions the whole model splits into.

Limits, stated in every report: an op timed alone pays the interpreter's fixed cost per
``invoke()`` (a few microseconds) and misses what XNNPACK does across ops in the full
graph (shared buffers, fused layout changes, quantize/requantize steps at partition
edges), so the per-op times need not add up to the whole-model time; both are printed.
The input tile is seeded noise; these kernels' cost does not depend on the values.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.core.errors import first_line
from marsedge.edge_runtime.errors import ModelError
from marsedge.edge_runtime.interpreter import interpreter_api, make_interpreter
from marsedge.errors import MarsEdgeError

logger = logging.getLogger(__name__)


class ProfileError(MarsEdgeError):
    """The model cannot be taken apart or one of its ops cannot run alone."""


def _schema():
    """The TFLite flatbuffer schema module of whichever package provides one."""
    try:
        from ai_edge_litert import schema_py_generated

        return schema_py_generated
    except ImportError:
        pass
    try:
        from tensorflow.lite.python import schema_py_generated  # type: ignore[no-redef]

        return schema_py_generated
    except ImportError:
        raise ProfileError(
            "per-op profiling needs the TFLite schema from ai-edge-litert (pip install ai-edge-litert)"
        ) from None


@dataclass(frozen=True)
class OpInfo:
    """One operator of subgraph 0: its index, builtin name, tensors and multiply-accumulates."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    dtype: str
    output_shape: tuple[int, ...]
    macs: int


@dataclass
class Graph:
    """The unpacked flatbuffer of a .tflite and what the profiler needs to know about it."""

    model: Any
    ops: list[OpInfo]
    constant: set[int]
    producer: dict[int, int]

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @cached_property
    def from_constants(self) -> set[int]:
        """Tensors computed from constants only (e.g. a float16 weight's DEQUANTIZE output)."""
        derived: set[int] = set()
        for op in self.ops:  # a .tflite stores its ops in execution order
            if all(t in self.constant or t in derived for t in op.inputs if t >= 0):
                derived.update(op.outputs)
        return derived


def read_graph(model: str | Path | bytes) -> Graph:
    """Unpacks a .tflite (trailing metadata is ignored) into a :class:`Graph`.

    Raises:
        ProfileError: not a TFLite flatbuffer this schema can read.
    """
    schema = _schema()
    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    try:
        unpacked = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        subgraph = unpacked.subgraphs[0]
    except Exception as exc:  # flatbuffers raises anything on a foreign file
        raise ProfileError(f"not a TFLite model ({type(exc).__name__})") from None
    op_names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    type_names = {value: key.lower() for key, value in vars(schema.TensorType).items() if not key.startswith("_")}
    tensors = subgraph.tensors or []

    def is_constant(index: int) -> bool:
        buffer = unpacked.buffers[tensors[index].buffer] if tensors[index].buffer < len(unpacked.buffers) else None
        if buffer is None:
            return False
        return (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "size", 0))

    constant = {i for i in range(len(tensors)) if is_constant(i)}
    # The flatbuffer may store batch 1 for tensors whose batch the interpreter computes
    # (SPACE_TO_BATCH_ND for dilated convolutions); take the shapes it allocates.
    try:
        shaper = make_interpreter(bytes(data), 1, reference_kernels=True)
    except ModelError as exc:
        raise ProfileError(str(exc)) from None
    for index, tensor in enumerate(tensors):
        if index not in constant:
            try:
                tensor.shape = [int(d) for d in shaper._get_tensor_details(index, 0)["shape"]]  # noqa: SLF001
            except ValueError:  # a tensor the interpreter does not describe: keep the stored shape
                pass
    del shaper
    producer: dict[int, int] = {}
    ops: list[OpInfo] = []
    for index, op in enumerate(subgraph.operators or []):
        code = unpacked.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            name = f"CUSTOM:{custom}"
        inputs = tuple(int(t) for t in (op.inputs if op.inputs is not None else []))
        outputs = tuple(int(t) for t in (op.outputs if op.outputs is not None else []))
        for out in outputs:
            producer[out] = index
        first_out = tensors[outputs[0]] if outputs else None
        known = first_out is not None and first_out.shape is not None
        output_shape = tuple(int(d) for d in first_out.shape) if known else ()
        dtype = type_names.get(first_out.type, "?") if first_out is not None else "?"
        ops.append(OpInfo(index, name, inputs, outputs, dtype, output_shape, _macs(name, inputs, outputs, tensors)))
    return Graph(unpacked, ops, constant, producer)


def model_macs(model: str | Path | bytes) -> int:
    """Multiply-accumulates of one inference (convolutions, transposed convolutions, dense)."""
    return read_graph(model).macs


def _shape(tensors, index: int) -> tuple[int, ...]:
    shape = tensors[index].shape
    return tuple(int(d) for d in shape) if shape is not None else ()


def _macs(name: str, inputs: tuple[int, ...], outputs: tuple[int, ...], tensors) -> int:
    """MACs of one op, counted like :func:`marsedge.train.model.count_macs` (a dilated
    convolution lowered to SPACE_TO_BATCH_ND + CONV_2D counts its padded batch)."""
    try:
        if name == "CONV_2D":
            cout, kh, kw, cin = _shape(tensors, inputs[1])
            n, oh, ow, _ = _shape(tensors, outputs[0])
            return n * oh * ow * cout * kh * kw * cin
        if name == "DEPTHWISE_CONV_2D":
            _, kh, kw, cout = _shape(tensors, inputs[1])
            n, oh, ow, _ = _shape(tensors, outputs[0])
            return n * oh * ow * cout * kh * kw
        if name == "TRANSPOSE_CONV":
            cout, kh, kw, cin = _shape(tensors, inputs[1])
            n, ih, iw, _ = _shape(tensors, inputs[2])
            return n * ih * iw * kh * kw * cin * cout
        if name == "FULLY_CONNECTED":
            units, depth = _shape(tensors, inputs[1])
            rows = int(np.prod(_shape(tensors, outputs[0])[:-1]))
            return rows * units * depth
    except (ValueError, IndexError):
        logger.debug("cannot count MACs of %s with shapes it does not expect", name)
    return 0


def _constant_ancestors(graph: Graph, op: OpInfo) -> list[int]:
    """Ops (in graph order) that compute inputs of ``op`` from constants only."""
    needed: set[int] = set()

    def collect(tensor: int) -> None:
        if tensor in graph.constant or tensor not in graph.producer:
            return
        index = graph.producer[tensor]
        if index not in needed:
            needed.add(index)
            for t in graph.ops[index].inputs:
                if t >= 0:
                    collect(t)

    for tensor in op.inputs:
        if tensor in graph.from_constants:
            collect(tensor)
    return sorted(needed)


def single_op_model(graph: Graph, op: OpInfo) -> bytes:
    """A .tflite holding ``op`` (and the ops computing its constant inputs) only."""
    import flatbuffers

    model = graph.model
    subgraph = model.subgraphs[0]
    keep = _constant_ancestors(graph, op) + [op.index]
    produced = {t for i in keep for t in graph.ops[i].outputs}
    inputs = sorted(
        {t for i in keep for t in graph.ops[i].inputs if t >= 0 and t not in graph.constant and t not in produced}
    )
    saved = (subgraph.operators, subgraph.inputs, subgraph.outputs, model.signatureDefs)
    try:
        subgraph.operators = [saved[0][i] for i in keep]
        subgraph.inputs = inputs
        subgraph.outputs = list(op.outputs)
        model.signatureDefs = None  # they name the full model's inputs and outputs
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
    finally:
        subgraph.operators, subgraph.inputs, subgraph.outputs, model.signatureDefs = saved


def record_tensors(content: bytes, seed: int = 0) -> dict[int, np.ndarray]:
    """Every non-constant tensor's value after one inference on a seeded random input.

    Runs the builtin reference kernels with all tensors preserved (XNNPACK would keep its
    intermediates to itself), so each single-op model is fed the inputs it meets in the
    full graph, shape tensors included.

    Raises:
        ProfileError: the interpreter cannot preserve tensors (old tflite_runtime).
    """
    interpreter_cls, resolver, _ = interpreter_api()
    try:
        interpreter = interpreter_cls(
            model_content=content,
            num_threads=1,
            experimental_op_resolver_type=resolver.BUILTIN_REF,
            experimental_preserve_all_tensors=True,
        )
        interpreter.allocate_tensors()
    except TypeError:
        raise ProfileError(
            "per-op profiling needs an interpreter that can preserve all tensors (ai-edge-litert)"
        ) from None
    except (ValueError, RuntimeError) as exc:
        raise ProfileError(f"not a TFLite model the interpreter can run: {first_line(exc)}") from None
    _random_inputs(interpreter, np.random.default_rng(seed))
    interpreter.invoke()
    values = {}
    for detail in interpreter.get_tensor_details():
        try:
            values[int(detail["index"])] = np.array(interpreter.get_tensor(detail["index"]))
        except ValueError:  # a tensor without data (constant folded away, unused)
            continue
    return values


def _random_inputs(interpreter, rng: np.random.Generator, values: dict[int, np.ndarray] | None = None) -> None:
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = tuple(int(d) for d in detail["shape"])
        recorded = (values or {}).get(int(detail["index"]))
        if recorded is not None and recorded.shape == shape and recorded.dtype == dtype:
            interpreter.set_tensor(detail["index"], recorded)
            continue
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
        elif dtype == np.bool_:
            value = rng.integers(0, 2, shape).astype(bool)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        interpreter.set_tensor(detail["index"], value)


def time_invokes(interpreter, runs: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``runs`` ``invoke()`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        interpreter.invoke()
    samples = []
    for _ in range(runs):
        tick = time.perf_counter()
        interpreter.invoke()
        samples.append((time.perf_counter() - tick) * 1e3)
    return samples


@dataclass
class OpTiming:
    """One row of a per-op profile."""

    index: int
    op: str
    dtype: str
    output_shape: list[int]
    macs: int
    xnnpack: bool
    ms: float
    min_ms: float
    share: float = 0.0
    gmacs: float | None = None


@dataclass
class OpProfile:
    """Per-op times of one model at one thread count, with the whole-model time beside them."""

    model: str
    threads: int
    runs: int
    ops: list[OpTiming]
    whole_model_ms: float
    whole_model_min_ms: float
    sum_of_ops_ms: float
    sum_of_ops_min_ms: float
    partitions: int
    not_delegated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def profile_ops(model: str | Path, threads: int = 1, runs: int = 20, warmup: int = 3, seed: int = 0) -> OpProfile:
    """Times every op of ``model`` alone and the whole model, with ``threads`` threads.

    Raises:
        ProfileError: the model cannot be read or an op cannot run alone.
    """
    path = Path(model)
    content = path.read_bytes()
    graph = read_graph(content)
    values = record_tensors(content, seed)
    tensors = graph.model.subgraphs[0].tensors
    for index, value in values.items():
        if index < len(tensors) and index not in graph.constant:
            tensors[index].shape = list(value.shape)  # dynamic shapes, as the full graph meets them
    rng = np.random.default_rng(seed)

    whole = make_interpreter(content, threads)
    partitions = sum(1 for detail in whole._get_ops_details() if detail["op_name"] == "DELEGATE")  # noqa: SLF001
    _random_inputs(whole, rng)
    whole_samples = time_invokes(whole, runs, warmup)
    del whole

    rows: list[OpTiming] = []
    for op in graph.ops:
        if set(op.outputs) <= graph.from_constants:
            continue  # e.g. a float16 weight's DEQUANTIZE: folded at load, timed with its consumer
        try:
            interpreter = make_interpreter(single_op_model(graph, op), threads)
        except Exception as exc:  # ModelError and anything the flatbuffer writer raises
            raise ProfileError(f"op {op.index} ({op.name}) cannot run alone: {exc}") from None
        delegated = any(d["op_name"] == "DELEGATE" for d in interpreter._get_ops_details())  # noqa: SLF001
        _random_inputs(interpreter, rng, values)
        try:
            samples = time_invokes(interpreter, runs, warmup)
        except RuntimeError as exc:
            raise ProfileError(f"op {op.index} ({op.name}) fails alone: {first_line(exc)}") from None
        rows.append(
            OpTiming(
                index=op.index,
                op=op.name,
                dtype=op.dtype,
                output_shape=list(op.output_shape),
                macs=op.macs,
                xnnpack=delegated,
                ms=round(float(np.median(samples)), 4),
                min_ms=round(min(samples), 4),
                gmacs=round(op.macs / float(np.median(samples)) / 1e6, 2) if op.macs else None,
            )
        )
    total = sum(r.ms for r in rows)
    for row in rows:
        row.share = round(row.ms / total, 4) if total else 0.0
    return OpProfile(
        model=str(path),
        threads=threads,
        runs=runs,
        ops=rows,
        whole_model_ms=round(float(np.median(whole_samples)), 4),
        whole_model_min_ms=round(min(whole_samples), 4),
        sum_of_ops_ms=round(total, 4),
        sum_of_ops_min_ms=round(sum(r.min_ms for r in rows), 4),
        partitions=partitions,
        not_delegated=sorted({f"{r.op} ({r.dtype})" for r in rows if not r.xnnpack}),
    )


def op_type_totals(profile: OpProfile) -> dict[str, dict[str, float]]:
    """Per op type: count, milliseconds and MACs summed over its ops."""
    totals: dict[str, dict[str, float]] = {}
    for row in profile.ops:
        entry = totals.setdefault(row.op, {"count": 0, "ms": 0.0, "macs": 0})
        entry["count"] += 1
        entry["ms"] = round(entry["ms"] + row.ms, 4)
        entry["macs"] += row.macs
    return totals

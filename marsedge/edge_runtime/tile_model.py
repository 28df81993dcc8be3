"""One TFLite model run one tile at a time: the single tile-inference path of marsedge.

:class:`TileModel` owns the interpreter, the input table (grey level -> input tensor
value) and the output dequantisation. The :class:`~marsedge.edge_runtime.Segmenter` tiles
whole frames through it; evaluation, export, distillation and the benchmarks score tiles
of the model's input size with :meth:`TileModel.predict_masks`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError, ModelError
from .interpreter import input_lut, make_interpreter
from .metadata import input_normalization, read_metadata, temperature

TENSOR_DTYPES = (np.float32, np.int8, np.uint8)


class TileModel:
    """A .tflite segmenter ready to run single tiles of exactly its input size.

    Args:
        content: the .tflite bytes (appended metadata is ignored by the interpreter).
        metadata: the model's checked ``marsedge.json``; read from ``content`` when None.
            A bare flatbuffer (no metadata; export scores one before embedding it) is
            accepted when ``output_classes`` is given.
        output_classes: class id of each output channel; from the metadata when None.
        threads: interpreter threads; None lets the interpreter choose.
        reference_kernels: builtin reference kernels instead of XNNPACK.
        normalization: ``(mean, std)`` when the graph takes normalised levels
            (``(level - mean) / std``, the input table does it); when None, the metadata's
            ``input.normalization`` if it says ``in_model: false``, else none.

    Raises:
        ModelError: not a model the interpreter can run, no class list, or tensors that do
            not match the model contract.
    """

    def __init__(
        self,
        content: bytes,
        *,
        metadata: dict[str, Any] | None = None,
        output_classes: list[int] | None = None,
        threads: int | None = None,
        reference_kernels: bool = False,
        normalization: tuple[float, float] | None = None,
    ) -> None:
        if metadata is None:
            try:
                metadata = read_metadata(content)
            except ModelError:
                if output_classes is None:
                    raise
        if output_classes is None:
            output_classes = list(metadata["output_classes"])  # type: ignore[index]
        if normalization is None and metadata is not None:
            normalization = input_normalization(metadata)
        self.metadata = metadata  # None for a bare flatbuffer
        # softmax temperature fitted on val at export (calibrated confidence); 1 for older files
        self.temperature = temperature(metadata) if metadata is not None else 1.0
        self.output_classes = np.asarray(output_classes, dtype=np.uint8)
        self._content = content  # the interpreter may keep pointers into it
        self.interpreter = make_interpreter(content, threads, reference_kernels)
        self.input, self.output = self._check_tensors()
        _, self.height, self.width, _ = (int(d) for d in self.input["shape"])
        self.lut = input_lut(self.input, normalization)
        scale, zero_point = self.output["quantization"]
        self._output_scale = np.float32(scale) if self.output["dtype"] != np.float32 else None
        self._output_zero_point = np.float32(zero_point)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], threads: int | None = None) -> TileModel:
        """Loads a marsedge .tflite (with its metadata).

        Raises:
            ModelError: the file cannot be read or is not a marsedge model.
        """
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model: {exc.strerror or exc}") from None
        return cls(content, threads=threads)

    @property
    def is_integer(self) -> bool:
        """Whether the input and output tensors are both integer (an int8 model)."""
        return np.float32 not in (self.input["dtype"], self.output["dtype"])

    @property
    def tensor_type(self) -> str:
        """``input/output`` tensor dtypes, e.g. ``int8/int8``."""
        return "/".join(np.dtype(t["dtype"]).name for t in (self.input, self.output))

    def invoke(self, quantised: np.ndarray) -> np.ndarray:
        """Raw output ``(H, W, C)`` for one tile already mapped through :attr:`lut`."""
        self.interpreter.set_tensor(self.input["index"], quantised[None, :, :, None])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0]

    def dequantise(self, raw: np.ndarray) -> np.ndarray:
        """Raw output as float32 logits (a fresh array)."""
        if self._output_scale is None:
            return raw.astype(np.float32, copy=True)
        return (raw.astype(np.float32) - self._output_zero_point) * self._output_scale

    def logits(self, tile: np.ndarray) -> np.ndarray:
        """Raw output ``(H, W, C)`` for one uint8 tile (int8 models: still quantised)."""
        return self.invoke(self.lut[tile])

    def float_logits(self, tile: np.ndarray) -> np.ndarray:
        """Output ``(H, W, C)`` float32 for one uint8 tile (int8 models dequantised)."""
        return self.dequantise(self.logits(tile))

    def predict_masks(self, images: np.ndarray) -> np.ndarray:
        """Class-id masks ``(N, H, W)`` for uint8 tiles ``(N, H, W)`` of the model's size.

        Raises:
            ImageError: the tiles are not the model's input size.
        """
        check_tile_size(images, (self.height, self.width))
        masks = np.empty(images.shape, dtype=np.uint8)
        for index, tile in enumerate(images):
            # argmax of int8 logits equals argmax after dequantising (positive scale)
            masks[index] = self.output_classes[np.argmax(self.logits(tile), axis=-1)]
        return masks

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax class probabilities ``(N, H, W, C)`` float32 for uint8 tiles ``(N, H, W)``.

        Raises:
            ImageError: the tiles are not the model's input size.
        """
        check_tile_size(images, (self.height, self.width))
        result = np.empty((*images.shape, len(self.output_classes)), dtype=np.float32)
        for index, tile in enumerate(images):
            logits = self.float_logits(tile)
            logits -= logits.max(axis=-1, keepdims=True)
            np.exp(logits, out=logits)
            result[index] = logits / logits.sum(axis=-1, keepdims=True)
        return result

    def _check_tensors(self) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
        except (ValueError, RuntimeError) as exc:  # e.g. a corrupt tensor name in the flatbuffer
            raise ModelError(f"corrupt model: cannot read its tensors ({type(exc).__name__}: {exc})") from None
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"expected one input and one output tensor, got {len(inputs)} and {len(outputs)}")
        shape = tuple(int(d) for d in inputs[0]["shape"])
        if self.metadata is not None:
            expected = (1, int(self.metadata["input"]["height"]), int(self.metadata["input"]["width"]), 1)
            if shape != expected:
                raise ModelError(f"wrong input shape {shape}, expected {expected} (from the metadata)")
        elif len(shape) != 4 or shape[0] != 1 or shape[3] != 1:
            raise ModelError(f"wrong input shape {shape}, expected (1, height, width, 1)")
        if inputs[0]["dtype"] not in TENSOR_DTYPES:
            raise ModelError(f"unsupported input type {np.dtype(inputs[0]['dtype']).name}")
        classes = len(self.output_classes)
        out_expected = (*shape[:3], classes)
        out_shape = tuple(int(d) for d in outputs[0]["shape"])
        if out_shape != out_expected:
            raise ModelError(
                f"wrong output shape {out_shape}, expected {out_expected} "
                + (
                    f"({classes} output_classes in the metadata)"
                    if self.metadata is not None
                    else f"({classes} classes)"
                )
            )
        if outputs[0]["dtype"] not in TENSOR_DTYPES:
            raise ModelError(f"unsupported output type {np.dtype(outputs[0]['dtype']).name}")
        if outputs[0]["dtype"] != np.float32 and not outputs[0]["quantization"][0] > 0:
            raise ModelError("integer output tensor without a quantisation scale")
        return inputs[0], outputs[0]


def check_tile_size(images: np.ndarray, size: tuple[int, int]) -> None:
    """Refuses a stack of tiles that are not ``(N, height, width)``.

    Raises:
        ImageError: naming both sizes.
    """
    if images.ndim != 3 or images.shape[1:] != size:
        raise ImageError(
            f"tiles are {'x'.join(str(d) for d in images.shape[1:])} but the model takes {size[0]}x{size[1]}; "
            "evaluate on tiles of the model's input size"
        )

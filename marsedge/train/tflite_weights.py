"""Start a Keras model from the weights of a float32 .tflite that ``marsedge export`` wrote
(such as the bundled ``marsedge_float32.tflite``), for fine-tuning when only the file is at hand.

The exporter folds every BatchNormalization into the convolution before it and writes
each stride-2 Conv2DTranspose as a 1x1 Conv2D followed by depth-to-space
(:mod:`marsedge.export.fold`). This module undoes both: kernels and biases go back to
their layers by name (TFLite keeps the Keras layer names), depth-to-space kernels are
reordered into transposed-convolution taps, and each BatchNormalization becomes the
identity plus the folded bias. The batch statistics behind the fold are not in the file,
so those BatchNormalization layers stay fixed (not trainable) afterwards: fine-tuning
changes the convolutions, and the model computes what the file computes before the first
step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from marsedge.errors import RunDirError

log = logging.getLogger(__name__)

# A half-resolution file (stem_stride 1) has no refine head: a refine model it starts keeps
# the file's U-Net and learns the head (``refine*`` layers) from its initialisers.
NEW_HEAD_PREFIX = "refine"


def _file_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Kernels by layer name (``(out, kh, kw, in)`` as TFLite stores them) and biases by layer name."""
    from marsedge.edge_runtime.interpreter import make_interpreter

    try:
        content = path.read_bytes()
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read ({exc.strerror or exc})") from None
    interpreter = make_interpreter(content, 1, False)
    kernels, biases = {}, {}
    for detail in interpreter.get_tensor_details():
        name = detail["name"]
        if len(detail["shape"]) == 4 and name.endswith("/Conv2D") and ";" not in name:
            kernels[name.split("/")[-2]] = interpreter.get_tensor(detail["index"])
        elif len(detail["shape"]) == 1 and "/BiasAdd" in name:
            for part in name.split(";"):
                if part.endswith("/BiasAdd"):
                    biases[part.split("/")[-2]] = interpreter.get_tensor(detail["index"])
                    break
    return kernels, biases


def load_tflite_weights(model, path: str | Path) -> int:
    """Set ``model``'s weights from a float32 marsedge .tflite of the same architecture
    (or of the same U-Net without the refine head, whose layers then keep their initialisers).

    Returns:
        How many convolution layers were set.

    Raises:
        RunDirError: the file is unreadable, not float32, or its layers do not match the model.
    """
    from marsedge.train.tf_env import keras

    layers = keras.layers
    path = Path(path)
    kernels, biases = _file_tensors(path)
    if not kernels:
        raise RunDirError(f"{path}: no float convolution kernels found (give a float32 export, not int8)")
    by_name = {layer.name: layer for layer in model.layers}
    done, fresh = 0, []
    for layer in model.layers:
        if not isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            continue
        if layer.name not in kernels:
            if layer.name.startswith(NEW_HEAD_PREFIX):
                fresh.append(layer.name)
                continue
            raise RunDirError(f"{path}: has no layer {layer.name!r}; its architecture differs from this run's model")
        stored, bias = kernels[layer.name], biases.get(layer.name)
        if isinstance(layer, layers.Conv2DTranspose):  # a 1x1 Conv2D + depth-to-space in the file
            size = layer.strides[0]
            out_channels = layer.filters
            kernel = stored[:, 0, 0, :].reshape(size, size, out_channels, stored.shape[-1])
            bias = None if bias is None else bias[:out_channels]
        else:
            kernel = np.transpose(stored, (1, 2, 3, 0))
        expected = tuple(layer.kernel.shape)
        if kernel.shape != expected:
            raise RunDirError(f"{path}: layer {layer.name} has a {kernel.shape} kernel, this run's model {expected}")
        bias = np.zeros(layer.filters, np.float32) if bias is None else bias
        norm = by_name.get(f"{layer.name[: -len('_conv')]}_bn" if layer.name.endswith("_conv") else f"{layer.name}_bn")
        if layer.use_bias:
            layer.set_weights([kernel, bias])
        elif isinstance(norm, layers.BatchNormalization):
            layer.set_weights([kernel])
            identity = np.ones(layer.filters, np.float32) * (1.0 - norm.epsilon)  # sqrt(var + eps) == 1
            norm.set_weights([np.ones(layer.filters, np.float32), bias, np.zeros(layer.filters, np.float32), identity])
            norm.trainable = False
        else:
            raise RunDirError(f"{path}: layer {layer.name} has a bias this run's model has no place for")
        done += 1
    log.info("weights from %s (%d convolutions; batch normalisation fixed at the file's fold)", path, done)
    if fresh:
        log.info("new in this model, from their initialisers: %s", ", ".join(fresh))
    return done

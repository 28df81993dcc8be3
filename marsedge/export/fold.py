"""The graph the int8 model runs: BatchNormalization folded into its convolution.

The TFLite converter folds every BatchNormalization into the preceding convolution. Doing
it before QAT makes the fake-quantised Keras graph the same graph the converter writes:
weights are quantised after folding, as on the device, and QAT fine-tuning cannot drift
the batch statistics.

A plain ReLU after a Conv2DTranspose also moves into the convolution's activation: the
converter fuses ReLU into CONV_2D by itself but leaves a separate int8 RELU after
TRANSPOSE_CONV, with its own scale, which XNNPACK cannot delegate (it splits the graph).

A Conv2DTranspose whose kernel equals its stride (the U-Net's 2x2, stride-2 up-sampling)
has non-overlapping windows, so it is the same map as a 1x1 Conv2D to ``stride**2``
times the channels followed by depth-to-space. Int8 kernels run that form several times
faster (``tools/upsample_speed.py``; 0.076 vs 0.012 ms for the shipped model's logits),
so the folded graph uses it.
"""

from __future__ import annotations

import numpy as np

from marsedge.train.model import DepthToSpace
from marsedge.train.tf_env import keras

layers = keras.layers
_FOLDABLE = (layers.Conv2D, layers.Conv2DTranspose)


def consumers_of(model) -> dict[str, list]:
    """Layer name -> the layers that take its output."""
    consumers: dict[str, list] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:  # noqa: SLF001 - Keras 2 functional graph
            for inbound in node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]:
                consumers.setdefault(inbound.name, []).append(layer)
    return consumers


def foldable_pairs(model) -> dict[str, object]:
    """Convolution name -> the BatchNormalization it can absorb.

    A pair folds when the convolution has a linear activation, its only consumer is the
    BatchNormalization, and the normalisation runs over the channel axis.
    """
    consumers = consumers_of(model)
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, _FOLDABLE) or layer.get_config().get("activation") != "linear":
            continue
        after = consumers.get(layer.name, [])
        if len(after) == 1 and isinstance(after[0], layers.BatchNormalization) and after[0].axis in ([-1], [3]):
            pairs[layer.name] = after[0]
    return pairs


def _is_plain_relu(layer) -> bool:
    if not isinstance(layer, layers.ReLU):
        return False
    config = layer.get_config()
    return config.get("max_value") is None and not config.get("negative_slope") and not config.get("threshold")


def mergeable_relus(model, pairs: dict[str, object]) -> dict[str, object]:
    """Conv2DTranspose name -> the ReLU that becomes its activation (after its BN, if folded)."""
    consumers = consumers_of(model)
    merges = {}
    for layer in model.layers:
        if not isinstance(layer, layers.Conv2DTranspose) or layer.get_config().get("activation") != "linear":
            continue
        last = pairs.get(layer.name, layer)
        after = consumers.get(last.name, [])
        if len(after) == 1 and _is_plain_relu(after[0]):
            merges[layer.name] = after[0]
    return merges


def _folded_weights(conv, bn) -> list[np.ndarray]:
    weights = conv.get_weights()
    kernel = weights[0]
    bias = weights[1] if conv.use_bias else np.zeros(conv.filters, np.float32)
    gamma = bn.gamma.numpy() if bn.scale else np.ones(conv.filters, np.float32)
    beta = bn.beta.numpy() if bn.center else np.zeros(conv.filters, np.float32)
    scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    # Conv2D kernels are (kh, kw, in, out); Conv2DTranspose kernels are (kh, kw, out, in).
    shape = (1, 1, -1, 1) if isinstance(conv, layers.Conv2DTranspose) else (1, 1, 1, -1)
    kernel = kernel * scale.reshape(shape)
    bias = (bias - bn.moving_mean.numpy()) * scale + beta
    return [kernel.astype(np.float32), bias.astype(np.float32)]


def depth_to_space_weights(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A ``(s, s, C, K)`` Conv2DTranspose kernel (stride ``s``) and bias as the equivalent 1x1 Conv2D's.

    ``depth_to_space`` (DCR order) puts channel ``(i * s + j) * C + c`` at offset
    ``(i, j)`` of each output block, so that channel takes kernel tap ``[i, j, c]``.
    """
    size, _, classes, inputs = kernel.shape
    weights = kernel.reshape(size * size * classes, inputs).T  # (K, (i*s+j)*C + c)
    return weights.reshape(1, 1, inputs, size * size * classes), np.tile(bias, size * size)


def is_depth_to_space(layer) -> bool:
    """Whether a Conv2DTranspose can be written as a 1x1 Conv2D + depth-to-space (windows tile the output)."""
    if not isinstance(layer, layers.Conv2DTranspose):
        return False
    config = layer.get_config()
    size = tuple(config["kernel_size"])
    return (
        size[0] == size[1] > 1
        and tuple(config["strides"]) == size
        and tuple(config.get("dilation_rate", (1, 1))) == (1, 1)
        and config.get("output_padding") is None
        and config.get("data_format", "channels_last") == "channels_last"
    )


def _depth_to_space_layers(layer, weights: list[np.ndarray], activation: str):
    """The 1x1 Conv2D (keeps the layer's name) and DepthToSpace that replace ``layer``."""
    kernel = weights[0]
    bias = weights[1] if len(weights) == 2 else np.zeros(kernel.shape[2], np.float32)
    size = kernel.shape[0]
    conv = layers.Conv2D(
        kernel.shape[2] * size * size, 1, activation=activation, name=layer.name, dtype=layer.get_config()["dtype"]
    )
    return conv, DepthToSpace(size, name=f"{layer.name}_d2s"), depth_to_space_weights(kernel, bias)


def fold_for_int8(model):
    """A copy of ``model`` in the form the int8 model runs.

    Each foldable BatchNormalization is merged into its convolution (which gains a bias),
    a plain ReLU after a Conv2DTranspose becomes its activation, and a Conv2DTranspose with
    kernel = stride becomes a 1x1 Conv2D of the same name plus a ``{name}_d2s``
    DepthToSpace. Other layer names are kept. Outputs at inference are unchanged (up to
    float rounding).
    """
    pairs = foldable_pairs(model)
    relus = mergeable_relus(model, pairs)
    absorbed = {bn.name for bn in pairs.values()} | {relu.name for relu in relus.values()}
    tensors: dict[int, object] = {}
    inputs = []
    for tensor in model.inputs:
        new = keras.Input(type_spec=tensor.type_spec, name=tensor.name.split(":")[0])
        tensors[id(tensor)] = new
        inputs.append(new)

    def mapped(value):
        if isinstance(value, (list, tuple)):
            return [tensors[id(v)] for v in value]
        return tensors[id(value)]

    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:  # noqa: SLF001
            raise ValueError(
                f"layer {layer.name} is used {len(layer._inbound_nodes)} times; cannot fold a shared layer"
            )
        if layer.name in absorbed:
            tensors[id(layer.output)] = mapped(layer.input)
            continue
        config = layer.get_config()
        weights = _folded_weights(layer, pairs[layer.name]) if layer.name in pairs else layer.get_weights()
        if layer.name in pairs:
            config["use_bias"] = True  # the folded normalisation's shift
        if layer.name in relus:
            config["activation"] = "relu"
        if is_depth_to_space(layer):
            conv, d2s, conv_weights = _depth_to_space_layers(layer, weights, config["activation"])
            output = d2s(conv(mapped(layer.input)))
            conv.set_weights(list(conv_weights))
        else:
            clone = layer.__class__.from_config(config)
            output = clone(mapped(layer.input))
            clone.set_weights(weights)
        tensors[id(layer.output)] = output
    outputs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def split_input_normalization(model) -> tuple[object, tuple[float, float] | None]:
    """The graph from its normalised input on, and the ``(mean, std)`` it normalised with.

    A graph that starts with a ``Rescaling`` (``scale = 1/std``, ``offset = -mean/std``,
    scalars; a QAT model's ``QuantizeWrapper`` around one too) loses that layer: the
    runtime's input table maps each grey level 0..255 to ``(level - mean) / std`` and
    quantises it itself. In an int8 file the normalisation inside the graph was a MUL and
    an ADD, each rounding to its own int8 scale: the MUL's range (that of the Rescaling's
    output, ``-mean/std`` included) left 208 values for 256 grey levels in
    the bundled model, and the ADD rounded again (205). Without them the input tensor holds every grey level exactly (its
    scale is one grey level when calibrated on the full 0..255 ramp). A QAT model's input
    quantizer before the Rescaling goes with it. A graph without such a first layer comes
    back unchanged, with None.
    """
    if len(model.inputs) != 1:
        return model, None
    consumers = consumers_of(model)
    first = consumers.get(model.layers[0].name, [])
    if not isinstance(model.layers[0], layers.InputLayer) or len(first) != 1:
        return model, None
    layer = first[0]
    if type(layer).__name__ == "QuantizeLayer":  # a QAT model quantises its input first (tfmot)
        after = consumers.get(layer.name, [])
        if len(after) != 1:
            return model, None
        layer = after[0]
    rescaling = getattr(layer, "layer", layer)  # tfmot's QuantizeWrapper holds the layer it wraps
    if not isinstance(rescaling, layers.Rescaling):
        return model, None
    config = rescaling.get_config()
    scale, offset = config.get("scale"), config.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)) or not scale > 0:
        return model, None
    outputs = model.outputs if len(model.outputs) > 1 else model.outputs[0]
    return keras.Model(layer.output, outputs, name=model.name), (-offset / scale, 1.0 / scale)

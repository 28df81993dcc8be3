"""The compact U-Net family: small block factories, every layer named.

Input: ``(H, W, 1)`` raw grey values 0..255; a ``Rescaling`` layer normalises them
inside the model so int8 input quantisation maps uint8 pixels almost exactly.
Output: ``(H, W, C)`` logits, one channel per predicted class.
"""

from __future__ import annotations

from marsedge.train.config import ModelConfig
from marsedge.train.tf_env import keras, tf

layers = keras.layers


@keras.utils.register_keras_serializable(package="marsedge")
class SpatialSoftmaxPool(layers.Layer):
    """Attention pooling of GCNet: softmax over all pixels of ``logits``, weighted sum of ``features``.

    Inputs ``[features (B,H,W,C), logits (B,H,W,1)]``; output ``(B,1,1,C)``.
    """

    def call(self, inputs):
        features, logits = inputs
        shape = tf.shape(features)
        weights = tf.nn.softmax(tf.reshape(logits, [shape[0], -1, 1]), axis=1)
        flat = tf.reshape(features, [shape[0], -1, shape[3]])
        context = tf.matmul(weights, flat, transpose_a=True)
        return tf.reshape(context, [shape[0], 1, 1, shape[3]])

    def compute_output_shape(self, input_shape):
        features = input_shape[0]
        return (features[0], 1, 1, features[-1])


@keras.utils.register_keras_serializable(package="marsedge")
class DepthToSpace(layers.Layer):
    """``tf.nn.depth_to_space``: channel blocks of ``block_size**2`` become spatial blocks (DCR order).

    Not used when training; :func:`marsedge.export.fold.fold_for_int8` writes a
    non-overlapping Conv2DTranspose as a 1x1 Conv2D followed by this layer, the form int8
    kernels run fast.
    """

    def __init__(self, block_size: int, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        size = self.block_size
        scale = lambda value: None if value is None else value * size  # noqa: E731
        return (batch, scale(height), scale(width), None if channels is None else channels // size**2)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def conv_bn_relu(x, filters: int, name: str, kernel_size: int = 3, dilation_rate: int = 1, strides: int = 1):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def conv_block(x, filters: int, name: str, strides: int = 1):
    """Two 3x3 conv + BN + ReLU (the first one may stride)."""
    x = conv_bn_relu(x, filters, f"{name}_1", strides=strides)
    return conv_bn_relu(x, filters, f"{name}_2")


def dilated_bottleneck(x, filters: int, rates: tuple[int, ...], dropout: float, name: str):
    """Parallel dilated 3x3 convolutions at several rates, summed (the seed's bottleneck)."""
    x = conv_bn_relu(x, filters, f"{name}_in", kernel_size=1)
    branches = [conv_bn_relu(x, filters, f"{name}_d{rate}", dilation_rate=rate) for rate in rates]
    x = branches[0] if len(branches) == 1 else layers.Add(name=f"{name}_sum")(branches)
    if dropout:
        x = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(x)
    return x


def global_context(x, filters: int, name: str, reduction: int = 4):
    """GCNet block: attention-pooled context, a bottleneck transform, added to every pixel."""
    logits = layers.Conv2D(1, 1, name=f"{name}_attn")(x)
    context = SpatialSoftmaxPool(name=f"{name}_pool")([x, logits])
    context = layers.Conv2D(max(filters // reduction, 4), 1, name=f"{name}_reduce")(context)
    context = layers.ReLU(name=f"{name}_relu")(context)
    context = layers.Conv2D(filters, 1, name=f"{name}_expand")(context)
    return layers.Add(name=f"{name}_add")([x, context])


def squeeze_excitation(x, filters: int, name: str, reduction: int = 4):
    """Channel attention: global average, two 1x1 convs, sigmoid gate multiplied in."""
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    gate = layers.Conv2D(max(filters // reduction, 4), 1, activation="relu", name=f"{name}_reduce")(gate)
    gate = layers.Conv2D(filters, 1, activation="sigmoid", name=f"{name}_expand")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


def up_bn_relu(x, filters: int, name: str, stride: int = 2):
    """Learned up-sampling: a stride-``stride`` Conv2DTranspose, BN and ReLU (layers ``{name}_up*``)."""
    x = layers.Conv2DTranspose(filters, stride, strides=stride, padding="same", use_bias=False, name=f"{name}_up")(x)
    x = layers.BatchNormalization(name=f"{name}_up_bn")(x)
    return layers.ReLU(name=f"{name}_up_relu")(x)


def decoder_block(x, skip, filters: int, name: str, use_se: bool):
    """Conv2DTranspose + BN up-sampling, concatenated skip, conv block."""
    x = up_bn_relu(x, filters, name)
    x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    x = conv_block(x, filters, name)
    if use_se:
        x = squeeze_excitation(x, filters, f"{name}_se")
    return x


def refine_head(x, tile, filters: int, stride: int, num_outputs: int, residual: bool = False):
    """Full-resolution head: up-sampled decoder features + a 3x3 conv of the tile, fused, 1x1 logits.

    With ``residual`` the decoder's own logits (``logits``, at its resolution) are up-sampled
    bilinearly and the head's 1x1 output (``refine_logits``, zero-initialised) is added to them.
    """
    coarse = layers.Conv2D(num_outputs, 1, name="logits")(x) if residual else None
    x = up_bn_relu(x, filters, "refine", stride)
    detail = conv_bn_relu(tile, max(filters // 2, 1), "refine_stem")
    x = layers.Concatenate(name="refine_concat")([x, detail])
    x = conv_bn_relu(x, filters, "refine")
    if not residual:
        return layers.Conv2D(num_outputs, 1, name="logits")(x)
    correction = layers.Conv2D(num_outputs, 1, kernel_initializer="zeros", name="refine_logits")(x)
    coarse = layers.UpSampling2D(stride, interpolation="bilinear", name="logits_up")(coarse)
    return layers.Add(name="refine_add")([coarse, correction])


def build_unet(
    config: ModelConfig,
    input_shape: tuple[int, int] = (64, 128),
    num_outputs: int = 4,
    mean: float = 0.0,
    std: float = 255.0,
    name: str = "marsedge_unet",
):
    """Build the U-Net.

    Args:
        config: width, depth, bottleneck dilations and optional blocks.
        input_shape: tile height and width; both must be divisible by ``2**depth``.
        num_outputs: logit channels (4 when unlabeled pixels are ignored, else 5).
        mean: grey-level mean of the training tiles (0..255 scale).
        std: grey-level standard deviation of the training tiles.
        name: model name.

    Raises:
        ValueError: if the tile size is not divisible by ``2**depth``.
    """
    height, width = input_shape
    factor = config.stem_stride * 2**config.depth
    if height % factor or width % factor:
        raise ValueError(f"tile size {height}x{width} must be divisible by stem_stride * 2**depth = {factor}")
    inputs = keras.Input(shape=(height, width, 1), name="tile")
    x = normalized = layers.Rescaling(1.0 / std, offset=-mean / std, name="normalize")(inputs)
    if config.stem_pool:
        x = layers.AveragePooling2D(config.stem_stride, name="stem_pool")(x)
    skips = []
    for level in range(config.depth):
        filters = level_filters(config, level)
        stride = config.stem_stride if level == 0 and not config.stem_pool else 1
        x = conv_block(x, filters, f"enc{level}", strides=stride)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    bottleneck_filters = config.bottleneck_filters or level_filters(config, config.depth)
    x = dilated_bottleneck(x, bottleneck_filters, config.dilation_rates, config.dropout, "bottleneck")
    if config.global_context:
        x = global_context(x, bottleneck_filters, "context")
    for level in reversed(range(config.depth)):
        filters = level_filters(config, level)
        x = decoder_block(x, skips[level], filters, f"dec{level}", config.squeeze_excitation)
    if config.stem_stride == 1:
        outputs = layers.Conv2D(num_outputs, 1, name="logits")(x)
    elif config.refine_filters:
        outputs = refine_head(
            x, normalized, config.refine_filters, config.stem_stride, num_outputs, config.refine_residual
        )
    else:  # learned up-sampling straight to full-resolution logits
        outputs = layers.Conv2DTranspose(
            num_outputs, config.stem_stride, strides=config.stem_stride, padding="same", name="logits"
        )(x)
    outputs = layers.Activation("linear", dtype="float32", name="logits_f32")(outputs)
    return keras.Model(inputs, outputs, name=name)


def level_filters(config: ModelConfig, level: int) -> int:
    """Width of encoder/decoder level ``level``: ``base_filters * 2**level``, capped at ``max_filters``."""
    filters = config.base_filters * 2**level
    return min(filters, config.max_filters) if config.max_filters else filters


def count_macs(model) -> int:
    """Multiply-accumulates for one tile (convolutions, transposed convolutions, dense)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            kh, kw = layer.kernel_size
            cin = layer.input_shape[-1] if not isinstance(layer.input_shape, list) else layer.input_shape[0][-1]
            out = layer.output_shape
            if isinstance(layer, layers.Conv2DTranspose):
                # every input pixel scatters a kh x kw x cout kernel
                h, w = layer.input_shape[1], layer.input_shape[2]
                total += h * w * kh * kw * cin * layer.filters
            else:
                total += out[1] * out[2] * kh * kw * cin * layer.filters
        elif isinstance(layer, layers.Dense):
            total += layer.input_shape[-1] * layer.units
    return int(total)

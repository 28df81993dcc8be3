"""QuantizeConfigs for the layers tfmot has no 8-bit recipe for, and the QAT stand-ins they need.

Every config here is plain 8-bit asymmetric per-tensor on activations (what TFLite's int8
kernels take) and 8-bit symmetric on weights, so the fake-quant ranges learned in QAT are
exactly the scales the converter writes into the .tflite file.
"""

from __future__ import annotations

from marsedge.train.model import DepthToSpace, SpatialSoftmaxPool
from marsedge.train.tf_env import keras, require_tfmot, tf

tfmot = require_tfmot()
_quantizers = tfmot.quantization.keras.quantizers
QuantizeConfig = tfmot.quantization.keras.QuantizeConfig

# TFLite's int8 SOFTMAX and LOGISTIC kernels always write scale 1/256, zero point -128.
SOFTMAX_OUTPUT_MAX = 255.0 / 256.0


def activation_quantizer():
    """8-bit, per-tensor, asymmetric moving-average range: the int8 activation scheme."""
    return _quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


class OutputQuantizeConfig(QuantizeConfig):
    """Quantise only the layer's output; the layer has no weights.

    For input normalisation (``Rescaling``), the squeeze-excitation gate (``Multiply``),
    and global-context pooling (``SpatialSoftmaxPool``): their int8 kernels need just the
    output range.
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [activation_quantizer()]

    def get_config(self):
        return {}


class PassThroughQuantizeConfig(OutputQuantizeConfig):
    """Quantise nothing: the layer only moves values (``DepthToSpace``), so its int8
    output keeps its input's scale, as the TFLite kernel requires; or it leaves the int8
    graph (the input ``Rescaling``, which the runtime's input table does exactly)."""

    def get_output_quantizers(self, layer):
        return []


class ConvQuantizeConfig(QuantizeConfig):
    """A convolution whose output is quantised by the ReLU right after it.

    Weights: 8-bit symmetric, per output channel for ``Conv2D`` (as tfmot's default) and
    per tensor for ``Conv2DTranspose`` (its kernel keeps output channels on axis 2). No
    output quantiser, so no fake-quant sits between the convolution and its ReLU and the
    converter fuses the two. (tfmot's own Conv2D+ReLU rule drops the weight quantiser.)
    """

    def __init__(self, per_axis: bool = True):
        self.per_axis = per_axis

    def get_weights_and_quantizers(self, layer):
        quantizer = _quantizers.LastValueQuantizer(
            num_bits=8, per_axis=self.per_axis, symmetric=True, narrow_range=True
        )
        return [(layer.kernel, quantizer)]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"per_axis": self.per_axis}


@keras.utils.register_keras_serializable(package="marsedge")
class QatSpatialSoftmaxPool(SpatialSoftmaxPool):
    """:class:`SpatialSoftmaxPool` that simulates int8 softmax during QAT.

    TFLite's int8 softmax writes probabilities with the fixed scale 1/256; the attention
    weights of a global-context block are small (about 1/pixels), so the QAT model must
    see that rounding to learn around it.
    """

    def call(self, inputs):
        features, logits = inputs
        shape = tf.shape(features)
        weights = tf.nn.softmax(tf.reshape(logits, [shape[0], -1, 1]), axis=1)
        weights = tf.quantization.fake_quant_with_min_max_args(weights, min=0.0, max=SOFTMAX_OUTPUT_MAX, num_bits=8)
        flat = tf.reshape(features, [shape[0], -1, shape[3]])
        context = tf.matmul(weights, flat, transpose_a=True)
        return tf.reshape(context, [shape[0], 1, 1, shape[3]])


def custom_objects() -> dict:
    """Everything ``quantize_scope`` needs to clone and load a marsedge QAT model."""
    return {
        "OutputQuantizeConfig": OutputQuantizeConfig,
        "ConvQuantizeConfig": ConvQuantizeConfig,
        "PassThroughQuantizeConfig": PassThroughQuantizeConfig,
        "DepthToSpace": DepthToSpace,
        "SpatialSoftmaxPool": SpatialSoftmaxPool,
        "QatSpatialSoftmaxPool": QatSpatialSoftmaxPool,
    }

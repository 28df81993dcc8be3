"""QAT annotation: every layer quantised (SE and global context included), folding exact,
clear errors for layers nothing can quantise, calibration data checked."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.export.convert import ExportError, representative_dataset
from tests._models import vary_batch_norm

pytest.importorskip("tensorflow_model_optimization")


@pytest.fixture(scope="module")
def attention_model():
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet
    from marsedge.train.tf_env import keras

    keras.utils.set_random_seed(0)
    model = build_unet(
        ModelConfig(
            base_filters=4,
            depth=2,
            dilation_rates=(1, 2),
            bottleneck_filters=None,
            global_context=True,
            squeeze_excitation=True,
            stem_stride=1,
        ),
        mean=60.0,
        std=25.0,
    )
    vary_batch_norm(model, seed=0, offset=0.1, mean=0.1, variance=(0.5, 2.0))
    return model


def test_fold_keeps_outputs_and_removes_batch_norm(attention_model):
    from marsedge.export.fold import fold_for_int8
    from marsedge.train.tf_env import keras

    folded = fold_for_int8(attention_model)
    tiles = np.random.default_rng(1).uniform(0, 255, (2, 64, 128, 1)).astype(np.float32)
    expected = attention_model(tiles, training=False).numpy()
    assert np.abs(folded(tiles, training=False).numpy() - expected).max() < 1e-4 * max(np.abs(expected).max(), 1)
    assert not [l for l in folded.layers if isinstance(l, keras.layers.BatchNormalization)]
    # each 2x2 stride-2 up-sampling is now a 1x1 conv (ReLU moved into it) + depth-to-space
    assert not [l for l in folded.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    up = folded.get_layer("dec0_up")
    assert isinstance(up, keras.layers.Conv2D) and up.kernel_size == (1, 1) and up.get_config()["activation"] == "relu"
    assert up.filters == 4 * attention_model.get_layer("dec0_up").filters
    assert folded.get_layer("dec0_up_d2s").block_size == 2


def test_depth_to_space_weights_match_a_transposed_convolution():
    from marsedge.export.fold import depth_to_space_weights
    from marsedge.train.model import DepthToSpace
    from marsedge.train.tf_env import keras

    rng = np.random.default_rng(2)
    kernel, bias = rng.normal(size=(3, 3, 5, 6)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    transpose = keras.layers.Conv2DTranspose(5, 3, strides=3)
    features = rng.normal(size=(2, 4, 7, 6)).astype(np.float32)
    transpose.build(features.shape)
    transpose.set_weights([kernel, bias])
    expected = transpose(features).numpy()
    conv = keras.layers.Conv2D(45, 1)
    conv.build(features.shape)
    conv.set_weights(list(depth_to_space_weights(kernel, bias)))
    got = DepthToSpace(3)(conv(features)).numpy()
    assert got.shape == expected.shape == (2, 12, 21, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_overlapping_transposed_convolution_is_left_as_it_is():
    from marsedge.export.fold import fold_for_int8
    from marsedge.train.tf_env import keras

    tile = keras.Input((8, 8, 3))
    up = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(tile)
    folded = fold_for_int8(keras.Model(tile, up))
    assert isinstance(folded.get_layer("up"), keras.layers.Conv2DTranspose)


def test_qat_wraps_every_layer(attention_model):
    from marsedge.export import quantize_configs
    from marsedge.export.qat import build_qat_model
    from marsedge.train.tf_env import keras, tfmot

    qat = build_qat_model(attention_model)
    wrapper = tfmot.quantization.keras.QuantizeWrapperV2
    unwrapped = [
        l.name
        for l in qat.layers
        if not isinstance(l, (wrapper, keras.layers.InputLayer)) and type(l).__name__ != "QuantizeLayer"
    ]
    assert unwrapped == []
    assert [type(l).__name__ for l in qat.layers[:2]] == ["InputLayer", "QuantizeLayer"]
    wrapped = {l.layer.name: l for l in qat.layers if isinstance(l, wrapper)}
    # every layer of the float model is wrapped, or was folded into a wrapped convolution
    folded_away = {l.name for l in attention_model.layers if isinstance(l, keras.layers.BatchNormalization)}
    folded_away |= {f"dec{i}_up_relu" for i in range(2)}
    originals = {l.name for l in attention_model.layers if not isinstance(l, keras.layers.InputLayer)}
    added = {f"dec{i}_up_d2s" for i in range(2)}  # each up-sampling's depth-to-space step
    assert originals - folded_away | added == set(wrapped)
    for name in added:
        assert isinstance(wrapped[name].quantize_config, quantize_configs.PassThroughQuantizeConfig), name
    # the layers tfmot rejects by default carry marsedge's configs
    for name in ("context_pool", "dec0_se_scale", "dec1_se_scale"):
        assert isinstance(wrapped[name].quantize_config, quantize_configs.OutputQuantizeConfig), name
    # the input normalisation does not round: the runtime's input table does it exactly
    assert isinstance(wrapped["normalize"].quantize_config, quantize_configs.PassThroughQuantizeConfig)
    assert isinstance(wrapped["context_pool"].layer, quantize_configs.QatSpatialSoftmaxPool)
    # a convolution straight into a ReLU keeps its weight quantiser
    assert isinstance(wrapped["enc0_1_conv"].quantize_config, quantize_configs.ConvQuantizeConfig)
    assert any("kernel_min" in w.name for w in wrapped["enc0_1_conv"].weights)


def test_calibrated_ranges_pin_the_input(attention_model):
    from marsedge.export.qat import build_qat_model, calibrate_ranges

    qat = build_qat_model(attention_model)
    tiles = np.random.default_rng(2).integers(0, 256, (8, 64, 128), dtype=np.uint8)
    assert calibrate_ranges(qat, attention_model, tiles) > 20
    (input_layer,) = [l for l in qat.layers if type(l).__name__ == "QuantizeLayer"]
    values = sorted(float(w.numpy()) for w in input_layer.weights if w.name.endswith(("_min:0", "_max:0")))
    assert values == [0.0, 255.0]
    names = [w.name for w in qat.get_layer("quant_normalize").weights]
    assert not [n for n in names if n.endswith(("_min:0", "_max:0"))], names  # no range: it leaves the int8 graph


def test_unquantisable_layer_is_named():
    from marsedge.export.qat import QuantizationError, build_qat_model
    from marsedge.train.tf_env import keras

    inputs = keras.Input((8, 8, 1), name="tile")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="odd_norm")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="logits")(x))
    with pytest.raises(QuantizationError, match=r"odd_norm \(LayerNormalization\).*no int8 QuantizeConfig"):
        build_qat_model(model)


@pytest.mark.parametrize(
    "tiles, message",
    [
        (np.zeros((4, 32, 32), np.uint8), r"shape \(4, 32, 32\); the model takes \(N, 64, 128\)"),
        (np.zeros((4, 64, 128, 3), np.uint8), r"shape \(4, 64, 128, 3\)"),
        (np.zeros((0, 64, 128), np.uint8), "no representative tiles"),
        (np.full((1, 64, 128), 300.0), "grey levels 0..255"),
    ],
)
def test_representative_data_of_the_wrong_shape(tiles, message):
    with pytest.raises(ExportError, match=message):
        representative_dataset(tiles, (64, 128))


def test_representative_dataset_starts_with_a_full_ramp():
    batches = list(representative_dataset(np.full((2, 64, 128), 7, np.uint8), (64, 128))())
    assert len(batches) == 3 and batches[0][0].shape == (1, 64, 128, 1)
    assert batches[0][0].min() == 0 and batches[0][0].max() == 255 and batches[1][0].dtype == np.float32


@pytest.mark.parametrize("refine_filters", [0, 8])
def test_stride_two_stem_folds_and_quantises_every_layer(refine_filters):
    from marsedge.export.fold import fold_for_int8
    from marsedge.export.qat import build_qat_model
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet
    from marsedge.train.tf_env import keras, tfmot

    keras.utils.set_random_seed(0)
    model = build_unet(
        ModelConfig(base_filters=8, depth=2, dilation_rates=(1, 2), stem_stride=2, refine_filters=refine_filters),
        mean=60.0,
        std=25.0,
    )
    tiles = np.random.default_rng(1).uniform(0, 255, (2, 64, 128, 1)).astype(np.float32)
    folded = fold_for_int8(model)
    expected = model(tiles, training=False).numpy()
    assert np.abs(folded(tiles, training=False).numpy() - expected).max() < 1e-4 * max(np.abs(expected).max(), 1)
    qat = build_qat_model(model)
    wrapper = tfmot.quantization.keras.QuantizeWrapperV2
    assert isinstance(qat.get_layer("quant_logits"), wrapper)
    assert qat(tiles, training=False).shape == (2, 64, 128, 4)


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")  # TFLiteConverter's, harmless
def test_int8_depth_to_space_loads_in_the_reference_kernels():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from marsedge.export.convert import cap_op_versions, to_tflite
    from marsedge.train.model import DepthToSpace
    from marsedge.train.tf_env import keras

    tile = keras.Input((64, 128, 1))
    model = keras.Model(tile, DepthToSpace(2)(keras.layers.Conv2D(16, 1)(tile)))
    tiles = np.random.default_rng(3).integers(0, 256, (4, 64, 128), dtype=np.uint8)
    content = to_tflite(model, "ptq", (64, 128), tiles)
    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    assert interpreter.get_output_details()[0]["shape"].tolist() == [1, 128, 256, 4]
    assert cap_op_versions(content) == content  # already capped; nothing else in the file moves

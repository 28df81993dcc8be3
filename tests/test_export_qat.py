"""QAT annotation: every layer quantised (SE and global context included), folding exact,
clear errors for layers nothing can quantise, calibration data checked."""
from __future__ import annotations

import numpy as np
import pytest

from marsedge.export.convert import ExportError, representative_dataset

pytest.importorskip("tensorflow_model_optimization")


@pytest.fixture(scope="module")
def attention_model():
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet
    from marsedge.train.tf_env import keras

    keras.utils.set_random_seed(0)
    model = build_unet(
        ModelConfig(
            base_filters=4, depth=2, dilation_rates=(1, 2), bottleneck_filters=None, global_context=True,
            squeeze_excitation=True, stem_stride=1,
        ),
        mean=60.0,
        std=25.0,
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial batch-norm statistics, so folding is tested
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2, n)]
            )
    return model


def test_fold_keeps_outputs_and_removes_batch_norm(attention_model):
    from marsedge.export.fold import fold_for_int8
    from marsedge.train.tf_env import keras

    folded = fold_for_int8(attention_model)
    tiles = np.random.default_rng(1).uniform(0, 255, (2, 64, 128, 1)).astype(np.float32)
    expected = attention_model(tiles, training=False).numpy()
    assert np.abs(folded(tiles, training=False).numpy() - expected).max() < 1e-4 * max(np.abs(expected).max(), 1)
    assert not [l for l in folded.layers if isinstance(l, keras.layers.BatchNormalization)]
    # the ReLU after each transposed convolution moved into it
    assert folded.get_layer("dec0_up").get_config()["activation"] == "relu"


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
    assert originals - folded_away == set(wrapped)
    # the layers tfmot rejects by default carry marsedge's configs
    for name in ("normalize", "context_pool", "dec0_se_scale", "dec1_se_scale"):
        assert isinstance(wrapped[name].quantize_config, quantize_configs.OutputQuantizeConfig), name
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
    normalize = {w.name.split("/")[-1].split(":")[0]: float(w.numpy()) for w in qat.get_layer("quant_normalize").weights}
    # (0 - 60) / 25 .. (255 - 60) / 25, up to the spread of the sampled tiles
    assert -2.5 < normalize["output_min"] < -2.0 and 7.0 < normalize["output_max"] < 7.9


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
        mean=60.0, std=25.0,
    )
    tiles = np.random.default_rng(1).uniform(0, 255, (2, 64, 128, 1)).astype(np.float32)
    folded = fold_for_int8(model)
    expected = model(tiles, training=False).numpy()
    assert np.abs(folded(tiles, training=False).numpy() - expected).max() < 1e-4 * max(np.abs(expected).max(), 1)
    qat = build_qat_model(model)
    wrapper = tfmot.quantization.keras.QuantizeWrapperV2
    assert isinstance(qat.get_layer("quant_logits"), wrapper)
    assert qat(tiles, training=False).shape == (2, 64, 128, 4)

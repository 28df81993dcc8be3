"""A float32 export starts a fine-tuning run: marsedge.train.tflite_weights undoes the
exporter's batch-norm folding and depth-to-space rewrite, so the rebuilt Keras model
computes what the file computes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("marsedge.train.tf_env")

from marsedge.errors import RunDirError  # noqa: E402
from marsedge.export.convert import to_tflite  # noqa: E402
from marsedge.export.fold import fold_for_int8, split_input_normalization  # noqa: E402
from marsedge.train.config import ModelConfig  # noqa: E402
from marsedge.train.model import build_unet  # noqa: E402
from marsedge.train.tf_env import keras  # noqa: E402
from marsedge.train.tflite_weights import load_tflite_weights  # noqa: E402
from tests._models import vary_batch_norm  # noqa: E402

SHAPE = ModelConfig(base_filters=4, depth=2, dilation_rates=(1,), bottleneck_filters=8, stem_stride=1, max_filters=8)


def _trained_looking(seed: int):
    """A small U-Net whose batch norms hold non-trivial statistics, as after training."""
    keras.utils.set_random_seed(seed)
    model = build_unet(SHAPE, (16, 32), 4, mean=60.0, std=25.0)
    vary_batch_norm(model, seed=seed, offset=0.3, mean=0.5, variance=(0.3, 2.0))
    return model


def test_a_float_export_loads_back_and_computes_the_same(tmp_path):
    model = _trained_looking(3)
    graph, normalization = split_input_normalization(fold_for_int8(model))
    path = tmp_path / "export_float32.tflite"
    path.write_bytes(to_tflite(graph, "float32", (16, 32), normalization=normalization))

    fresh = build_unet(SHAPE, (16, 32), 4, mean=60.0, std=25.0)
    assert load_tflite_weights(fresh, path) == sum(
        isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)) for layer in fresh.layers
    )
    tiles = np.random.default_rng(0).integers(0, 256, (4, 16, 32, 1)).astype(np.float32)
    expected = model.predict(tiles, verbose=0)
    assert np.abs(fresh.predict(tiles, verbose=0) - expected).max() < 1e-3 * np.abs(expected).max()
    assert not any(layer.trainable for layer in fresh.layers if isinstance(layer, keras.layers.BatchNormalization))

    other = build_unet(
        ModelConfig(base_filters=8, depth=2, dilation_rates=(1,), bottleneck_filters=8, stem_stride=1), (16, 32), 4
    )
    with pytest.raises(RunDirError, match="export_float32.tflite: layer enc0_1_conv has a"):
        load_tflite_weights(other, path)


def test_a_half_resolution_export_starts_a_full_resolution_refine_model_exactly(tmp_path):
    model = _trained_looking(5)
    graph, normalization = split_input_normalization(fold_for_int8(model))
    path = tmp_path / "half_float32.tflite"
    path.write_bytes(to_tflite(graph, "float32", (16, 32), normalization=normalization))

    shape = ModelConfig(
        base_filters=4, depth=2, dilation_rates=(1,), bottleneck_filters=8, max_filters=8,
        stem_stride=2, stem_pool=True, refine_filters=4, refine_residual=True,
    )  # fmt: skip
    full = build_unet(shape, (32, 64), 4, mean=60.0, std=25.0)
    load_tflite_weights(full, path)
    frames = np.random.default_rng(1).integers(0, 256, (3, 32, 64, 1)).astype(np.float32)
    halved = frames.reshape(3, 16, 2, 32, 2, 1).mean(axis=(2, 4))
    # the refine head starts at zero: the full-resolution model is the file's, up-sampled bilinearly
    expected = keras.layers.UpSampling2D(2, interpolation="bilinear")(model.predict(halved, verbose=0)).numpy()
    got = full.predict(frames, verbose=0)
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
    assert full.get_layer("refine_conv").trainable and full.get_layer("refine_bn").trainable

    deeper = build_unet(dataclasses.replace(shape, depth=3), (32, 64), 4)
    with pytest.raises(RunDirError, match="has no layer 'enc2_1_conv'"):
        load_tflite_weights(deeper, path)  # only a refine head may be new

"""Helpers that shape small Keras models for export tests."""

from __future__ import annotations

import numpy as np


def vary_batch_norm(model, seed: int, offset: float, mean: float, variance: tuple[float, float]) -> None:
    """Give every BatchNormalization layer non-trivial statistics, as after training: gamma in
    0.5..1.5, beta ~ N(0, ``offset``), moving mean ~ N(0, ``mean``), moving variance uniform in
    ``variance``. Folding and its inverse are only tested by layers that are not the identity."""
    from marsedge.train.tf_env import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, offset, n), rng.normal(0, mean, n), rng.uniform(*variance, n)]
            )

"""Exponential moving average of a model's weights (Polyak averaging), for evaluation.

Training updates the raw weights as usual; after every batch a shadow copy moves towards
them: ``shadow = d * shadow + (1 - d) * weight`` with ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` updates (TensorFlow's ``ExponentialMovingAverage`` warm-up, so the first
updates do not drag the random initial weights along). Every weight is averaged,
BatchNormalization's moving statistics included. Validation, the best checkpoint and the
exported model then use the averaged weights, which swing less from epoch to epoch than
the raw ones. The shadow variables are tracked by ``module`` so a checkpoint holds them
and a resumed run goes on averaging where it stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class WeightAverage:
    """Shadow weights of ``model`` averaged with ``decay`` per training step."""

    def __init__(self, tf, keras, model, decay: float):
        self.model = model
        self.module = tf.Module(name="weight_average")
        self.module.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        self.module.shadow = [
            tf.Variable(weight, trainable=False, name=f"average_{i}") for i, weight in enumerate(model.weights)
        ]
        weights, shadow, updates = list(model.weights), self.module.shadow, self.module.updates

        @tf.function
        def update():
            count = tf.cast(updates.assign_add(1), tf.float64)
            rate = tf.minimum(tf.constant(decay, tf.float64), (1.0 + count) / (10.0 + count))
            for average, weight in zip(shadow, weights):
                if average.dtype.is_floating:
                    d = tf.cast(rate, average.dtype)
                    average.assign(d * average + (1.0 - d) * weight)
                else:
                    average.assign(weight)

        self.update = update

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                update()

        self.callback = Callback()

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its raw weights after it."""
        raw = self.model.get_weights()
        self.model.set_weights([average.numpy() for average in self.module.shadow])
        try:
            yield
        finally:
            self.model.set_weights(raw)

"""Streaming mean IoU for Keras, accumulated on a confusion matrix over the whole epoch."""

from __future__ import annotations

from marsedge.train.tf_env import keras, tf

NUM_CLASSES = 5


def predicted_classes(logits):
    """Class ids from logits: channel k is class ``k + (5 - channels)``."""
    offset = NUM_CLASSES - logits.shape[-1]
    return tf.argmax(logits, axis=-1, output_type=tf.int32) + offset


class MeanIoU(keras.metrics.Metric):
    """Mean IoU over classes 1..4 on labelled pixels (truth 0 ignored), from one confusion matrix."""

    def __init__(self, name: str = "miou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.matrix = self.add_weight(
            name="confusion", shape=(NUM_CLASSES, NUM_CLASSES), initializer="zeros", dtype=tf.float64
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank == 4:  # distillation: class id, then teacher probabilities
            y_true = y_true[..., 0]
        truth = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        prediction = tf.reshape(predicted_classes(y_pred), [-1])
        keep = truth > 0
        cm = tf.math.confusion_matrix(
            tf.boolean_mask(truth, keep), tf.boolean_mask(prediction, keep), num_classes=NUM_CLASSES, dtype=tf.float64
        )
        self.matrix.assign_add(cm)

    def result(self):
        tp = tf.linalg.diag_part(self.matrix)[1:]
        union = tf.reduce_sum(self.matrix[1:, :], axis=1) + tf.reduce_sum(self.matrix[:, 1:], axis=0) - tp
        present = union > 0
        iou = tf.where(present, tp / tf.maximum(union, 1.0), tf.zeros_like(tp))
        return tf.reduce_sum(iou) / tf.maximum(tf.reduce_sum(tf.cast(present, tf.float64)), 1.0)

    def reset_state(self):
        self.matrix.assign(tf.zeros_like(self.matrix))

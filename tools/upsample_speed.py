"""Int8 cost of the final 2x up-sampling to logits: TRANSPOSE_CONV vs 1x1 CONV_2D + DEPTH_TO_SPACE.

The shipped stride-2 U-Net ends in a 2x2, stride-2 Conv2DTranspose from 24 channels at
32x64 to 4 logit channels at 64x128. The kernel windows do not overlap, so a 1x1
convolution to 4 * 2 * 2 = 16 channels followed by depth-to-space computes the same
thing. This converts each form alone (random weights, full-integer PTQ) and times it
with the edge runtime's interpreter (XNNPACK), median of 500 invokes. Export writes every
such up-sampling in the second form (``marsedge.export.fold``; weights mapped by its
``depth_to_space_weights``):

    python tools/upsample_speed.py [--threads 1,2]

Needs the train extra. Figures are in BENCHMARKS.md ("Per-op profile").
"""

from __future__ import annotations

import argparse

import numpy as np

SHAPE = (32, 64, 24)  # decoder output of the shipped model
CLASSES = 4


def build(kind: str):
    from marsedge.train.tf_env import keras, tf

    tile = keras.Input(SHAPE, batch_size=1)
    if kind == "TRANSPOSE_CONV":
        logits = keras.layers.Conv2DTranspose(CLASSES, 2, strides=2, padding="same")(tile)
    else:
        logits = tf.nn.depth_to_space(keras.layers.Conv2D(CLASSES * 4, 1)(tile), 2)
    return keras.Model(tile, logits)


def int8_model(model) -> bytes:
    from marsedge.train.tf_env import tf

    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.normal(size=(1, *SHAPE)).astype(np.float32)] for _ in range(16))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def median_ms(content: bytes, threads: int, runs: int = 500) -> float:
    from marsedge.benchmarks.ops import time_invokes
    from marsedge.edge_runtime.interpreter import make_interpreter

    interpreter = make_interpreter(content, threads=threads)
    tile = interpreter.get_input_details()[0]
    interpreter.set_tensor(tile["index"], np.zeros(tile["shape"], np.int8))
    return float(np.median(time_invokes(interpreter, runs, warmup=50)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print("| final up-sampling (int8) | " + " | ".join(f"{t} thread(s) ms" for t in threads) + " |")
    print("|---" * (1 + len(threads)) + "|")
    for kind in ("TRANSPOSE_CONV", "CONV_2D 1x1 + DEPTH_TO_SPACE"):
        content = int8_model(build(kind))
        print(f"| {kind} | " + " | ".join(f"{median_ms(content, t):.4f}" for t in threads) + " |")


if __name__ == "__main__":
    main()

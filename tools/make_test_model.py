"""Build the tiny trained test model and the golden masks the edge-runtime tests use.

Run explicitly, never from the tests (needs the [train] extra):

    python tools/make_test_model.py            # writes tests/data/...
    python tools/make_test_model.py --bundle   # also copies the int8 model into the package

It trains a ~3k-parameter U-Net-shaped conv net briefly (about a minute on two busy cores) on synthetic tiles
(marsedge.train.synthetic), converts it to a full-integer int8 TFLite (int8 input/output)
and a float32 TFLite, appends marsedge metadata, and writes golden masks computed by
TensorFlow's own interpreter (not by marsedge.edge_runtime) for a few generated images.
The model is weak on purpose (tiny, briefly trained) but it is trained, so its masks
have real structure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import marsedge  # noqa: E402
from marsedge.core.metadata import build_metadata, embed_metadata  # noqa: E402
from marsedge.train.synthetic import generate_frame, generate_tiles  # noqa: E402

DATA = ROOT / "tests" / "data"
GOLDEN = DATA / "golden"
BUNDLED = ROOT / "marsedge" / "edge_runtime" / "models" / "marsedge_int8.tflite"
HEIGHT, WIDTH = 64, 128
OUTPUT_CLASSES = [1, 2, 3, 4]
SEED = 0


def conv_block(x, filters: int, name: str):
    """3x3 convolution + ReLU."""
    return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)


def build_model(height: int | None = HEIGHT, width: int | None = WIDTH) -> keras.Model:
    """A two-level U-Net in miniature: raw grey 0..255 in, 4 logits per pixel out."""
    inputs = keras.Input((height, width, 1), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inputs)
    skip = conv_block(x, 8, "enc1")
    x = keras.layers.MaxPooling2D(2, name="down")(skip)
    x = conv_block(x, 16, "enc2")
    x = keras.layers.UpSampling2D(2, name="up")(x)
    x = keras.layers.Concatenate(name="skip")([x, skip])
    x = conv_block(x, 8, "dec1")
    logits = keras.layers.Conv2D(len(OUTPUT_CLASSES), 1, name="logits")(x)
    return keras.Model(inputs, logits, name="tiny_unet")


def train(model: keras.Model, images: np.ndarray, masks: np.ndarray, epochs: int) -> float:
    """Trains on labelled pixels only (class 0 ignored); returns validation pixel accuracy."""
    x = images[..., None].astype(np.float32)
    y = np.clip(masks.astype(np.int32) - 1, 0, None)[..., None]
    weights = (masks > 0).astype(np.float32)
    split = len(x) * 9 // 10
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[:split], y[:split], sample_weight=weights[:split], batch_size=32, epochs=epochs, verbose=2)
    predicted = model.predict(x[split:], verbose=0).argmax(-1)
    labelled = masks[split:] > 0
    return float((predicted == y[split:, ..., 0])[labelled].mean())


def convert(model: keras.Model, calibration: np.ndarray, int8: bool) -> bytes:
    """TFLite bytes: full-integer int8 (int8 input and output) or float32."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        # A 0..255 ramp makes the input quantiser span every grey level (scale 1, zero
        # point -128), so uint8 pixels map exactly.
        ramp = np.tile(np.linspace(0, 255, WIDTH, dtype=np.float32), (HEIGHT, 1))

        def representative_tiles():
            yield [ramp[None, ..., None]]
            for tile in calibration:
                yield [tile[None, ..., None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_tiles
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def metadata(precision: str, accuracy: float, name: str) -> dict:
    # Trained on synthetic tiles, not on frames of a camera: no field of view, so the
    # runtime feeds frames at their own resolution.
    return build_metadata(
        name=name,
        precision=precision,
        height=HEIGHT,
        width=WIDTH,
        normalization={"mean": 127.5, "std": 127.5, "in_model": True},
        output_classes=OUTPUT_CLASSES,
        model_pixels_per_frame=None,
        marsedge_version=marsedge.__version__,
        metrics={"val_pixel_accuracy": round(accuracy, 4), "note": "synthetic tiles, test model only"},
        source_run="tools/make_test_model.py",
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    )


def tflite_mask(model_bytes: bytes, tile: np.ndarray) -> np.ndarray:
    """Class ids for one model-sized tile, by TensorFlow's interpreter and numpy only."""
    interpreter = tf.lite.Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    q = np.clip(np.round(tile / scale) + zero_point, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], q[None, ..., None])
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"])[0]
    return np.asarray(OUTPUT_CLASSES, np.uint8)[logits.argmax(-1)]


def write_golden(int8_bytes: bytes, float_model: keras.Model) -> None:
    """Golden inputs and masks: model-sized tiles through the int8 TFLite model, and a
    larger frame through the float Keras model run whole (no tiles), which the runtime's
    tiled int8 result must match on >= 99% of pixels."""
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    GOLDEN.mkdir(parents=True)
    tiles, _ = generate_tiles(3, HEIGHT, WIDTH, seed=1234)
    for i, tile in enumerate(tiles):
        Image.fromarray(tile).save(GOLDEN / f"tile{i}.png", optimize=True)
        Image.fromarray(tflite_mask(int8_bytes, tile)).save(GOLDEN / f"tile{i}_mask.png", optimize=True)
    frame, _ = generate_frame(160, 224, seed=4321)
    whole = build_model(None, None)
    whole.set_weights(float_model.get_weights())
    mask = np.asarray(OUTPUT_CLASSES, np.uint8)[
        whole.predict(frame[None, ..., None].astype(np.float32), verbose=0)[0].argmax(-1)
    ]
    Image.fromarray(frame).save(GOLDEN / "frame0.png", optimize=True)
    Image.fromarray(mask).save(GOLDEN / "frame0_mask.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=2000, help="synthetic training tiles")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bundle", action="store_true", help=f"also copy the int8 model to {BUNDLED}")
    args = parser.parse_args()

    start = time.perf_counter()
    keras.utils.set_random_seed(SEED)
    images, masks = generate_tiles(args.tiles, HEIGHT, WIDTH, seed=SEED)
    model = build_model()
    accuracy = train(model, images, masks, args.epochs)
    print(f"{model.count_params()} parameters, validation pixel accuracy {accuracy:.3f}")

    DATA.mkdir(parents=True, exist_ok=True)
    int8_bytes = convert(model, images[:200], int8=True)
    float_bytes = convert(model, images[:200], int8=False)
    (DATA / "tiny_int8.tflite").write_bytes(
        embed_metadata(int8_bytes, metadata("int8-ptq", accuracy, "tiny-test-int8"))
    )
    (DATA / "tiny_float32.tflite").write_bytes(
        embed_metadata(float_bytes, metadata("float32", accuracy, "tiny-test-float32"))
    )
    write_golden(int8_bytes, model)
    if args.bundle:
        BUNDLED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / "tiny_int8.tflite", BUNDLED)
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    print(f"wrote {DATA} ({total / 1024:.0f} KiB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

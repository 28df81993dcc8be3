"""Float32 vs int8 latency of candidate architectures, before training any of them.

Latency does not depend on trained weights, so a model shape can be judged for int8
speed in seconds: build it from a ModelConfig with random weights, convert it to
float32 and to full-integer int8 (PTQ, calibrated on a few tiles), and time both with
the edge runtime's interpreter at each thread count. This is how the shipped
architecture was chosen (docs/research.md, "Speed").

    python tools/arch_speed.py                      # the comparison in benchmarks/arch_speed.md
    python tools/arch_speed.py --configs '[{"base_filters": 16}]' --threads 1,2,4

Needs the train extra. Prints a Markdown table; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROUNDS = 10  # alternating timing rounds per model pair

DEFAULT_CONFIGS = [  # every field that differs from ModelConfig's defaults is spelled out
    {"base_filters": 12, "depth": 3, "bottleneck_filters": None, "stem_stride": 1},  # full resolution, base 12
    {"base_filters": 8, "depth": 3, "bottleneck_filters": None, "stem_stride": 1},
    {"base_filters": 16, "depth": 3, "bottleneck_filters": None, "stem_stride": 1},
    {"base_filters": 16, "depth": 2, "bottleneck_filters": None, "stem_stride": 2},
    {"base_filters": 24, "depth": 2, "bottleneck_filters": None, "stem_stride": 2},
    {
        "base_filters": 24,
        "depth": 3,
        "bottleneck_filters": 96,
        "stem_stride": 2,
    },  # the half-resolution model shipped before the full-resolution one
    {"base_filters": 24, "depth": 3, "bottleneck_filters": None, "stem_stride": 2},
]


def random_model(values: dict):
    """The U-Net for ``values`` (ModelConfig fields) with random weights and BN statistics."""
    from marsedge.train.config import ModelConfig
    from marsedge.train.model import build_unet
    from marsedge.train.tf_env import keras

    config = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    keras.utils.set_random_seed(0)
    model = build_unet(config, mean=100.0, std=40.0)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial statistics, so ranges look like a trained model's
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2, n)]
            )
    return model


def paired_median_ms(contents: list[bytes], threads: int, runs: int, warmup: int) -> list[float]:
    """Median ms per invoke of each model, timed in ``ROUNDS`` alternating rounds so that
    a slow spell of a shared machine hits every model alike."""
    from marsedge.benchmarks.ops import time_invokes
    from marsedge.edge_runtime.interpreter import make_interpreter

    interpreters = []
    for content in contents:
        interpreter = make_interpreter(content, threads=threads)
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        time_invokes(interpreter, 0, warmup)
        interpreters.append(interpreter)
    samples: list[list[float]] = [[] for _ in contents]
    for _ in range(ROUNDS):
        for interpreter, bucket in zip(interpreters, samples):
            bucket += time_invokes(interpreter, max(runs // ROUNDS, 1), 0)
    return [float(np.median(bucket)) for bucket in samples]


def calibration_tiles(count: int = 32) -> np.ndarray:
    shared = Path(__file__).resolve().parents[2] / "shared/data/mars_terrain_64x128.npz"
    if shared.exists():
        with np.load(shared) as data:
            return data["training_set"][:count, 0]
    from marsedge.train.synthetic import generate_tiles

    return generate_tiles(count, seed=0)[0]


def describe(values: dict) -> str:
    return ", ".join(
        f"{k} {'/'.join(map(str, v)) if isinstance(v, list) else 'None' if v is None else v}" for k, v in values.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=json.dumps(DEFAULT_CONFIGS), help="JSON list of ModelConfig overrides")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    from marsedge.benchmarks.bench import cpu_model
    from marsedge.export.convert import to_tflite
    from marsedge.train.model import count_macs

    tiles = calibration_tiles()
    header = ["model (ModelConfig)", "params", "MMACs/tile", "int8 KB"]
    header += [f"{fmt} ms, {t} thr" for t in threads for fmt in ("float32", "int8")]
    header += [f"int8 speed-up, {t} thr" for t in threads]
    rows = []
    for values in json.loads(args.configs):
        model = random_model(values)
        f32 = to_tflite(model, "float32", (64, 128))
        int8 = to_tflite(model, "ptq", (64, 128), tiles)
        times = {t: tuple(paired_median_ms([f32, int8], t, args.runs, args.warmup)) for t in threads}
        row = [
            describe(values),
            f"{model.count_params():,}",
            f"{count_macs(model) / 1e6:.1f}",
            f"{len(int8) / 1024:.0f}",
        ]
        row += [f"{ms:.2f}" for t in threads for ms in times[t]]
        row += [f"{times[t][0] / times[t][1]:.2f}x" for t in threads]
        rows.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)
    lines = [
        f"Random weights, PTQ int8 vs float32, XNNPACK, median of {args.runs} invokes (in {ROUNDS} rounds "
        f"alternating the two models) after {args.warmup} warm-up, "
        f"on {platform.machine()} `{cpu_model()}`. Command: `python tools/arch_speed.py`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

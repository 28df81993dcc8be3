"""Per-layer int8 error of a run's full-integer conversion (TensorFlow's QuantizationDebugger).

    python tools/quant_debug.py runs/marsedge_navcam [--calib-tiles 256] [--debug-tiles 64]

Converts the run's folded float graph the way ``marsedge export`` does for PTQ (input
normalisation left to the runtime's input table, calibration on training tiles and the
0..255 ramp), runs it on val tiles next to float, and prints one markdown row per op:
its output scale and the RMSE of the int8 output in units of that scale. Rounding to a
uniform grid alone gives about 0.29 (1/sqrt(12)); an op far above that is where int8
loses accuracy. ``--keep-normalization`` converts the graph with the normalisation inside
(as older exports did: `"in_model": true` in their metadata). Chooses nothing. Needs the train extra.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--calib-tiles", type=int, default=256)
    parser.add_argument("--debug-tiles", type=int, default=64)
    parser.add_argument("--keep-normalization", action="store_true")
    args = parser.parse_args(argv)

    from marsedge.export.convert import make_converter, representative_dataset
    from marsedge.export.fold import fold_for_int8, split_input_normalization
    from marsedge.train import rundir
    from marsedge.train.tf_env import tf

    run = rundir.read_run(args.run)
    graph = fold_for_int8(rundir.load_model(run))
    normalization = None
    if not args.keep_normalization:
        graph, normalization = split_input_normalization(graph)
    height, width = run.input_shape
    calibration = rundir.split_tiles(run, "train").images[: args.calib_tiles]
    converter = make_converter(graph, "ptq", (height, width), calibration, normalization)
    val = rundir.split_tiles(run, "val").images[: args.debug_tiles]
    debug = representative_dataset(val, (height, width), normalization)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug)
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    print("| op | tensor | scale | RMSE / scale | mean error |")
    print("|---|---|---|---|---|")
    for row in csv.DictReader(buffer):
        scale = float(row["scale"])
        rmse = float(np.sqrt(float(row["mean_squared_error"])))
        print(
            f"| {row['op_name']} | {row['tensor_name'][-50:]} | {scale:.4f} | "
            f"{rmse / scale if scale else float('nan'):.3f} | {float(row['mean_error']):+.5f} |"
        )


if __name__ == "__main__":
    main()

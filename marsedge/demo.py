"""`make demo`: the whole job end to end in a few minutes on 2 CPU cores.

train briefly -> QAT + int8 export -> edge runtime on sample frames -> benchmark table.
Uses the real data file when present (a random subset of frames, for speed), else the
procedural terrain generator, so it works on a fresh machine with nothing else.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("demo_out")
REAL_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "samples"


def _step(title: str, args: list[str], allowed: tuple[int, ...] = (0,)) -> float:
    print(f"\n== {title}\n$ {' '.join(args)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(args, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode not in allowed:
        sys.exit(f"demo: step '{title}' failed with exit code {result.returncode}")
    return time.perf_counter() - started


def _tool(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def main() -> None:
    from marsedge.cli import default_data_path
    from marsedge.train.synthetic import write_dataset, write_png_frames

    started = time.perf_counter()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    data = default_data_path()
    if data is not None and data.exists():
        print(f"demo: using the real data file {data} (a random subset of 1,600 tiles)")
        limit = ["--limit", "1600"]
    else:
        data = OUT / "synthetic_mars.npz"
        print("demo: ../shared/data is absent; using the embedded procedural terrain generator")
        write_dataset(data, count=1600, seed=0)
        limit = []
    if REAL_SAMPLES.is_dir() and any(REAL_SAMPLES.glob("*.png")):
        samples = str(REAL_SAMPLES)
    else:
        samples = str(OUT / "samples")
        write_png_frames(samples, count=4, size=256, seed=1)

    run = OUT / "run"
    timings = {
        "train": _step(
            "train (8 epochs, the shipped model's shape)",
            [_tool("marsedge"), "train", "--data", str(data), "--out", str(run), "--epochs", "8", *limit],
        ),
        # An 8-epoch model is not yet stable under quantisation, so the demo reports the
        # accuracy gate without stopping on it; real runs keep the gate on.
        "export": _step(
            "export: QAT int8 + float32 TFLite",
            [_tool("marsedge"), "export", str(run), "--int8", "--formats", "float32,ptq,qat", "--qat-epochs", "1",
             "--no-gate"],
        ),
        "segment": _step(
            "edge runtime on sample frames (no TensorFlow)",
            [_tool("marsedge-run"), samples, "--model", str(run / "export" / "marsedge_qat.tflite"),
             "--out", str(OUT / "segmented")],
        ),
        "bench": _step(
            "benchmark: which model to ship",
            [_tool("marsedge"), "bench", str(run), "--runs", "30", "--threads", "1,2", "--out", str(OUT / "bench")],
        ),
    }
    total = time.perf_counter() - started
    print("\n== demo finished in %.0f s (%s)" % (total, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"  run directory   {run}/  (config.json, history.csv, metrics.json, preview.png)")
    print(f"  exported models {run}/export/  (export.json, marsedge_*.tflite)")
    print(f"  segmentations   {OUT}/segmented/  (*_mask.png, *_overlay.png, *.json)")
    print(f"  benchmark       {OUT}/bench/  (table, JSON, plot)")


if __name__ == "__main__":
    main()

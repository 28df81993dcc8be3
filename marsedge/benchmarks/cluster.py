"""Frames per second of one process (``marsedge-run``'s loop) against ``marsedge batch`` on
Ray with 1 and 2 workers, the per-frame overhead of Ray, and where a frame's time goes.

Run it (needs the cluster extra)::

    python -m marsedge.benchmarks.cluster                  # 48 frames of 1024x1024, bundled int8 model
    python -m marsedge.benchmarks.cluster --frames 96 --workers 1,2,4 --json

The frames are AI4Mars NavCam frames from ``../shared/data/ai4mars-msl-256`` enlarged to
the NavCam's native 1024x1024 (bicubic, JPEG quality 90: the size and format of an EDR
archive), or synthetic frames when that folder is absent. Every setup segments the same
files into a fresh output folder, masks only (no overlays), one interpreter thread per
process unless said otherwise.

Columns: ``frames/s`` over the whole run; ``steady`` once every worker is running (the
slope of frames done against time, from the first result to the last); ``ms/frame/core``
= cores used x seconds per frame in the steady part; ``in segment_file`` = the mean time
inside ``segment_file`` (read, segment, write), as each process measured it; ``overhead``
= seconds per frame per worker process, steady, minus that: what Ray costs per frame
(scheduling, moving paths and result rows, the table); ``start-up`` = seconds until the
first result (starting the actors, loading the model in each).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

AI4MARS_IMAGES = Path("msl") / "ncam" / "images" / "edr"
STAGES = ("load", "preprocess", "infer", "postprocess", "write")
STAGE_NAMES = {
    "load": "read + decode",
    "preprocess": "grey, area resize to the field of view, quantise",
    "infer": "inference (int8 interpreter)",
    "postprocess": "logit blending, argmax, nearest resize back, fractions",
    "write": "PNG encode + atomic write (mask, JSON record)",
}


def make_frames(directory: Path, count: int, size: int = 1024) -> list[Path]:
    """``count`` JPEG frames of ``size`` x ``size`` in ``directory``: AI4Mars frames when
    present, else synthetic ones."""
    directory.mkdir(parents=True, exist_ok=True)
    from marsedge.datapaths import frames_folder

    sources = sorted(glob.glob(str(frames_folder() / AI4MARS_IMAGES / "*.JPG")))[:count]
    paths = []
    if sources:
        for i in range(count):
            with Image.open(sources[i % len(sources)]) as image:
                frame = image.convert("L").resize((size, size), Image.BICUBIC)
            paths.append(directory / f"frame_{i:04d}.jpg")
            frame.save(paths[-1], quality=90)
        return paths
    from marsedge.train.synthetic import write_png_frames

    small = write_png_frames(directory / "small", count, size=max(8, size // 4), seed=3)
    for i, path in enumerate(small):
        big = np.asarray(Image.open(path).resize((size, size), Image.BICUBIC))
        paths.append(directory / f"frame_{i:04d}.jpg")
        Image.fromarray(big).save(paths[-1], quality=90)
    shutil.rmtree(directory / "small")
    return paths


def one_process(frames: list[Path], out: Path, model: str | None, threads: int) -> dict[str, Any]:
    """``marsedge-run``'s loop (segment_file per frame) in this process."""
    from marsedge.edge_runtime import Segmenter
    from marsedge.edge_runtime.batch import output_stem, segment_file

    segmenter = Segmenter(model, threads=threads)
    out.mkdir(parents=True, exist_ok=True)
    segment_file(segmenter, frames[0], out, "warmup", overlay=False)
    used: set[str] = set()
    stages = {s: 0.0 for s in STAGES}
    cpu = time.process_time()
    start = time.perf_counter()
    for path in frames:
        record = segment_file(segmenter, path, out, output_stem(path, used), overlay=False)
        for stage in STAGES:
            stages[stage] += record["latency_ms"][stage]
    seconds = time.perf_counter() - start
    cpu_ms = 1e3 * (time.process_time() - cpu) / len(frames)
    fps = len(frames) / seconds
    stage_ms = {s: v / len(frames) for s, v in stages.items()}
    return {
        "setup": f"1 process, {threads} thread(s)",
        "frames_per_s": fps,
        "steady_frames_per_s": fps,
        "ms_per_frame_core": 1e3 * seconds * threads / len(frames),
        "in_frame_ms": sum(stage_ms.values()),
        "overhead_ms_per_frame": 1e3 * seconds / len(frames) - sum(stage_ms.values()),
        "startup_s": 0.0,
        "cpu_ms_per_frame": cpu_ms,
        "stage_ms": stage_ms,
    }


def on_ray(frames: list[Path], out: Path, model: str | None, workers: int, address: str | None) -> dict[str, Any]:
    """``marsedge batch`` with ``workers`` actors of one thread each."""
    from marsedge.cluster.batch import BatchOptions, run_batch
    from marsedge.edge_runtime import SegmenterOptions

    marks: list[tuple[float, int]] = []
    options = BatchOptions(
        sources=tuple(str(p) for p in frames), out=out, address=address, workers=workers, threads=1,
        segmenter=SegmenterOptions(model=model),
    )  # fmt: skip
    start = time.perf_counter()
    result = run_batch(options, progress=lambda done, total, message: marks.append((time.perf_counter(), done)))
    wall = time.perf_counter() - start
    first = next(t for t, n in marks if n > 0)
    points = sorted({n: t for t, n in marks if n > 0}.items())  # the last time each count was seen
    counts, times = np.array([n for n, _ in points], float), np.array([t for _, t in points])
    steady = (
        float(np.polyfit(times - times[0], counts, 1)[0]) if len(points) > 2 else len(frames) / (wall - first + start)
    )
    rows = [r for r in result.rows if r["status"] == "segmented"]
    stage_ms = {s: float(np.mean([r[f"{s}_ms"] for r in rows])) for s in STAGES}
    return {
        "setup": f"Ray, {workers} worker(s) x 1 thread",
        "frames_per_s": len(frames) / wall,
        "steady_frames_per_s": steady,
        "ms_per_frame_core": 1e3 * workers / steady,
        "in_frame_ms": sum(stage_ms.values()),
        "overhead_ms_per_frame": 1e3 * workers / steady - sum(stage_ms.values()),
        "startup_s": first - start,
        "stage_ms": stage_ms,
    }


def run(frames: int, size: int, workers: list[int], model: str | None, address: str | None) -> dict[str, Any]:
    """Every setup on the same frames; returns the report."""
    from marsedge.cluster import connect

    root = Path(tempfile.mkdtemp(prefix="marsedge-cluster-bench-"))
    try:
        paths = make_frames(root / "frames", frames, size)
        results = [one_process(paths, root / "one-1", model, 1), one_process(paths, root / "one-2", model, 2)]
        tick = time.perf_counter()
        ray = connect(address or "local", num_cpus=os.cpu_count())
        init_s = time.perf_counter() - tick
        for n in workers:
            results.append(on_ray(paths, root / f"ray-{n}", model, n, address))
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "frames": frames,
        "size": size,
        "cpus": os.cpu_count(),
        "ray_init_s": init_s,
        "model": model or "bundled int8",
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    """The report as text: a row per setup, then the stages of one process, one thread."""
    lines = [
        f"{report['frames']} frames of {report['size']}x{report['size']} ({report['model']}), "
        f"{report['cpus']} CPUs; starting Ray took {report['ray_init_s']:.1f} s",
        f"{'setup':<28}{'frames/s':>9}{'steady':>9}{'ms/frame/core':>15}{'in segment_file':>17}{'overhead':>10}"
        f"{'start-up s':>12}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['setup']:<28}{r['frames_per_s']:>9.2f}{r['steady_frames_per_s']:>9.2f}{r['ms_per_frame_core']:>15.1f}"
            f"{r['in_frame_ms']:>17.1f}{r['overhead_ms_per_frame']:>+10.1f}{r['startup_s']:>12.1f}"
        )
    stages = report["results"][0]["stage_ms"]
    total = sum(stages.values())
    one = report["results"][0]
    lines.append(
        f"CPU time per frame (1 process, 1 thread): {one['cpu_ms_per_frame']:.1f} ms, "
        f"{1e3 / one['cpu_ms_per_frame']:.1f} frames/s per busy core (wall figures above include other load)"
    )
    lines.append("where a frame's time goes (1 process, 1 thread):")
    for stage in STAGES:
        lines.append(f"  {stages[stage]:7.1f} ms {100 * stages[stage] / total:5.1f}%  {STAGE_NAMES[stage]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m marsedge.benchmarks.cluster")
    parser.add_argument("--frames", type=int, default=48, help="frames per setup (default 48)")
    parser.add_argument("--size", type=int, default=1024, help="frame side in pixels (default 1024)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to time (default 1,2)")
    parser.add_argument("--model", default=None, help="a .tflite (default: the bundled int8 model)")
    parser.add_argument("--address", default=None, help="a Ray instance to join (default: start one here)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from marsedge.errors import MarsEdgeError

    try:
        report = run(args.frames, args.size, [int(w) for w in args.workers.split(",")], args.model, args.address)
    except (MarsEdgeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

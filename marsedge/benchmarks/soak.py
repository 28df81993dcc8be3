"""Soak test of the edge runtime: many tiles and full frames through one Segmenter, in one
process, watching memory and latency; then the same masks from threads and processes.

    python -m marsedge.benchmarks.soak                    # 10,000 tiles + 200 1024x1024 frames
    python -m marsedge.benchmarks.soak --tiles 500 --frames 10 --json soak.json

What it reports (and what a rover needs to hold):

- resident memory (RSS) after warm-up and at the end of each phase, and the peak: flat
  memory means no leak per frame;
- latency of the first and last decile of calls (mean and median), as wall time and as
  the calling thread's CPU time: a last decile slower than the first would mean the
  runtime degrades over a long run. With one interpreter thread the inference runs
  in the calling thread, so CPU time is the work itself and stays meaningful on a machine
  busy with other jobs, where wall time also measures the neighbours;
- identical masks (SHA-256 per input) from one Segmenter shared by several threads, one
  Segmenter per thread, and worker processes, compared with a single-threaded reference.

Inputs are seeded synthetic NavCam-like frames and tiles (:mod:`marsedge.train.synthetic`,
numpy and Pillow only), reused in turn. Only the runtime is measured: the inputs are made
before the first measurement.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marsedge.edge_runtime import DEFAULT_MODEL, Segmenter

DEFAULT_TILES = 10_000
DEFAULT_FRAMES = 200
DEFAULT_FRAME_SIZE = 1024


@dataclass
class Phase:
    """One stream of calls: its latencies and memory."""

    name: str
    calls: int
    rss_start_mib: float
    rss_end_mib: float
    first_decile_ms: dict[str, float]
    last_decile_ms: dict[str, float]
    drift_percent: float
    first_decile_cpu_ms: dict[str, float]
    last_decile_cpu_ms: dict[str, float]
    cpu_drift_percent: float
    rss_samples_mib: list[float] = field(default_factory=list)


@dataclass
class Parity:
    """Masks of the same inputs from several ways of calling the runtime."""

    inputs: int
    shared_segmenter_threads: bool
    segmenter_per_thread: bool
    processes: bool
    interpreter_threads: bool
    workers: int


def rss_mib() -> float:
    """Current resident memory of this process (Linux /proc; peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def make_inputs(tiles: int, frames: int, frame_size: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A pool of distinct tiles (64x128) and frames (frame_size square) to cycle through."""
    from marsedge.train.synthetic import generate_frame, generate_tiles

    tile_pool = generate_tiles(min(max(tiles, 1), 64), seed=seed)[0]
    frame_pool = [generate_frame(frame_size, frame_size, seed=seed + i)[0] for i in range(min(max(frames, 1), 4))]
    return tile_pool, frame_pool


def run_phase(name: str, segment: Callable[[np.ndarray], Any], pool: Sequence[np.ndarray], calls: int) -> Phase:
    """Calls ``segment`` ``calls`` times on the pool in turn, timing each call."""
    wall = np.empty(calls, dtype=np.float64)
    cpu = np.empty(calls, dtype=np.float64)
    samples = []
    every = max(calls // 10, 1)
    start_rss = rss_mib()
    for i in range(calls):
        tick, cpu_tick = time.perf_counter(), time.thread_time()
        segment(pool[i % len(pool)])
        wall[i] = (time.perf_counter() - tick) * 1e3
        cpu[i] = (time.thread_time() - cpu_tick) * 1e3
        if i % every == every - 1:
            samples.append(round(rss_mib(), 1))
    decile = max(calls // 10, 1)
    first, last = _stats(wall[:decile]), _stats(wall[-decile:])
    first_cpu, last_cpu = _stats(cpu[:decile]), _stats(cpu[-decile:])
    return Phase(
        name=name,
        calls=calls,
        rss_start_mib=round(start_rss, 1),
        rss_end_mib=round(rss_mib(), 1),
        first_decile_ms=first,
        last_decile_ms=last,
        drift_percent=_drift(first, last),
        first_decile_cpu_ms=first_cpu,
        last_decile_cpu_ms=last_cpu,
        cpu_drift_percent=_drift(first_cpu, last_cpu),
        rss_samples_mib=samples,
    )


def _stats(ms: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(ms.mean()), 3), "median": round(float(np.median(ms)), 3)}


def _drift(first: dict[str, float], last: dict[str, float]) -> float:
    return round(100 * (last["median"] / first["median"] - 1), 1) if first["median"] else 0.0


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask).tobytes() + str(mask.shape).encode()).hexdigest()


def _digests(model: str | None, threads: int | None, inputs: Sequence[np.ndarray]) -> list[str]:
    segmenter = Segmenter(model, threads=threads)
    return [mask_digest(segmenter.segment(image).mask) for image in inputs]


def check_parity(model: str | None, inputs: Sequence[np.ndarray], workers: int) -> Parity:
    """Compares mask digests of ``inputs`` across threads and processes."""
    reference = _digests(model, 1, inputs)
    order = [i for _ in range(2) for i in range(len(inputs))]

    shared = Segmenter(model, threads=1)
    with ThreadPoolExecutor(workers) as pool:  # one Segmenter, concurrent callers
        shared_digests = list(pool.map(lambda i: (i, mask_digest(shared.segment(inputs[i]).mask)), order))
    with ThreadPoolExecutor(workers) as pool:  # a Segmenter per thread, in parallel
        per_thread = list(pool.map(lambda _: _digests(model, 1, inputs), range(workers)))
    context = multiprocessing.get_context("spawn")  # no interpreter state inherited by fork
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        per_process = list(pool.map(_digests, [model] * workers, [1] * workers, [list(inputs)] * workers))
    interpreter_threads = _digests(model, max(workers, 2), inputs)
    return Parity(
        inputs=len(inputs),
        shared_segmenter_threads=all(digest == reference[i] for i, digest in shared_digests),
        segmenter_per_thread=all(d == reference for d in per_thread),
        processes=all(d == reference for d in per_process),
        interpreter_threads=interpreter_threads == reference,
        workers=workers,
    )


def soak(
    model: str | None = None,
    tiles: int = DEFAULT_TILES,
    frames: int = DEFAULT_FRAMES,
    frame_size: int = DEFAULT_FRAME_SIZE,
    threads: int | None = 1,
    workers: int = 4,
    warmup: int = 5,
) -> dict[str, Any]:
    """Runs the soak and returns the report (see the module docs)."""
    tile_pool, frame_pool = make_inputs(tiles, frames, frame_size)
    rss_before_model = rss_mib()
    segmenter = Segmenter(model, threads=threads)
    rss_model = rss_mib()
    for image in [tile_pool[0]] * warmup + frame_pool[:1] * max(warmup // 2, 1):
        segmenter.segment(image)
    rss_warm = rss_mib()
    started = time.perf_counter()
    phases = [run_phase("tiles", segmenter.segment, tile_pool, tiles)] if tiles else []
    if frames:
        phases.append(run_phase(f"frames {frame_size}x{frame_size}", segmenter.segment, frame_pool, frames))
    soak_s = time.perf_counter() - started
    rss_end = rss_mib()
    parity = check_parity(model, [*tile_pool[:4], *frame_pool[:2]], workers) if workers else None
    return {
        "model": segmenter.model_info,
        "machine": machine(),
        "threads": threads,
        "rss_mib": {
            "before_model": round(rss_before_model, 1),
            "model_loaded": round(rss_model, 1),
            "start": round(rss_warm, 1),
            "end": round(rss_end, 1),
            "growth": round(rss_end - rss_warm, 1),
            "peak": round(peak_rss_mib(), 1),
        },
        "phases": [asdict(p) for p in phases],
        "soak_seconds": round(soak_s, 1),
        "parity": asdict(parity) if parity else None,
    }


def machine() -> str:
    """The CPU and core count, for the report's header."""
    from marsedge.benchmarks.bench import cpu_model

    name = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{name}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, load average {load:.1f} at start"


def table(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    rss = report["rss_mib"]
    lines = [
        f"Machine: {report['machine']}; model {report['model']['name']} ({report['model']['tensor_type']}), "
        f"interpreter threads {report['threads'] or 'default'}.",
        "",
        "| phase | calls | RSS start MiB | RSS end MiB | wall ms, first / last decile (median) | drift "
        "| CPU ms, first / last decile (median) | CPU drift |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["phases"]:
        lines.append(
            f"| {p['name']} | {p['calls']} | {p['rss_start_mib']} | {p['rss_end_mib']} | "
            f"{p['first_decile_ms']['median']:.2f} / {p['last_decile_ms']['median']:.2f} | "
            f"{p['drift_percent']:+.1f}% | "
            f"{p['first_decile_cpu_ms']['median']:.2f} / {p['last_decile_cpu_ms']['median']:.2f} | "
            f"{p['cpu_drift_percent']:+.1f}% |"
        )
    lines += [
        "",
        f"RSS: {rss['model_loaded']} MiB with the model loaded, {rss['start']} MiB after warm-up, "
        f"{rss['end']} MiB at the end ({rss['growth']:+.1f} MiB over {report['soak_seconds']} s); process peak "
        f"{rss['peak']} MiB (includes making the synthetic inputs before the model is loaded).",
    ]
    parity = report["parity"]
    if parity:
        verdict = lambda ok: "identical" if ok else "DIFFERENT"  # noqa: E731
        lines.append(
            f"Masks of {parity['inputs']} inputs vs. one single-threaded Segmenter: shared Segmenter from "
            f"{parity['workers']} threads {verdict(parity['shared_segmenter_threads'])}; a Segmenter per thread "
            f"{verdict(parity['segmenter_per_thread'])}; {parity['workers']} processes {verdict(parity['processes'])}; "
            f"{max(parity['workers'], 2)} interpreter threads {verdict(parity['interpreter_threads'])}."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=f"marsedge .tflite (default: the bundled {DEFAULT_MODEL.name})")
    parser.add_argument("--tiles", type=int, default=DEFAULT_TILES, help="tile calls (64x128)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="full-frame calls")
    parser.add_argument("--frame-size", type=int, default=DEFAULT_FRAME_SIZE, help="frame side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (0: its default)")
    parser.add_argument("--workers", type=int, default=4, help="threads and processes for the parity check (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = soak(args.model, args.tiles, args.frames, args.frame_size, args.threads or None, args.workers)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    parity = report["parity"]
    identical = parity is None or all(
        parity[k] for k in ("shared_segmenter_threads", "segmenter_per_thread", "processes")
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

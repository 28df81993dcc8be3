"""Peak resident memory of the edge runtime segmenting one frame, in a separate process.

The parent process of a benchmark holds every model, the data set and maybe TensorFlow,
so its memory says nothing about the rover board. The child started here imports only
numpy and :mod:`marsedge.edge_runtime`, loads one model, segments one frame of
``frame_size`` (seeded noise: memory does not depend on pixel values) and reports its
high-water mark: ``VmHWM`` from ``/proc/self/status`` where Linux has it, else
``ru_maxrss`` from :func:`resource.getrusage`. It also reports the mark reached after the
imports, before the model, so the model's own share can be read off.

Run as ``python -m marsedge.benchmarks.rss MODEL --threads N --frame-size HxW`` it prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def measure_rss(
    model: str, threads: int | None, frame_size: tuple[int, int], reference_kernels: bool = False, timeout: float = 300
) -> dict:
    """Runs the child process for ``model`` and returns its report.

    Returns:
        ``{"peak_mb", "baseline_mb", "source", "frame_size", "threads"}``; megabytes are
        MiB (2**20 bytes).

    Raises:
        RuntimeError: the child failed (its last stderr line is in the message).
    """
    size = f"{frame_size[0]}x{frame_size[1]}"
    command = [sys.executable, "-m", "marsedge.benchmarks.rss", str(model), "--frame-size", size]
    if threads is not None:
        command += ["--threads", str(threads)]
    if reference_kernels:
        command.append("--reference-kernels")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory measurement of {model} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_kib() -> tuple[int, str]:
    """(high-water resident memory of this process in KiB, where it was read)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (value // 1024 if sys.platform == "darwin" else value), "ru_maxrss"  # bytes on macOS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--frame-size", default="1024x1024")
    parser.add_argument("--reference-kernels", action="store_true")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.frame_size.lower().split("x"))

    import numpy as np

    from marsedge.edge_runtime import Segmenter
    from marsedge.edge_runtime.interpreter import interpreter_api

    interpreter_api()  # import the interpreter package before the baseline reading
    baseline, _ = peak_kib()
    segmenter = Segmenter(args.model, threads=args.threads, reference_kernels=args.reference_kernels)
    frame = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    segmenter.segment(frame)
    peak, source = peak_kib()
    print(
        json.dumps(
            {
                "peak_mb": round(peak / 1024, 1),
                "baseline_mb": round(baseline / 1024, 1),
                "source": source,
                "frame_size": [height, width],
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()

"""The machine's measured peak multiply-accumulate rate, the yardstick for "GMAC/s achieved".

What it measures: the best of a few float32 ``n x n @ n x n`` matrix products through
numpy's BLAS (OpenBLAS in the numpy wheels), with the BLAS limited to ``threads`` threads
in a fresh process (the thread count of a BLAS is fixed when it loads). A tuned GEMM is
the fastest dense float32 code a CPU runs in practice, so a convolution (an implicit
GEMM) cannot beat it by much; it is below the datasheet peak (clock x FMA units x SIMD
lanes).

There is no int8 figure: numpy has no fast int8 GEMM, and a guess (a multiple of the
float32 figure) is beaten by XNNPACK's int8 convolutions on CPUs with dot-product
instructions, which made "% of peak" read above 100%. Int8 models are reported in GMAC/s
without a share of a peak.

Run as ``python -m marsedge.benchmarks.peak --threads N`` it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
DEFAULT_SIZE = 1024
DEFAULT_REPEATS = 5


def float32_gemm_gmacs(size: int = DEFAULT_SIZE, repeats: int = DEFAULT_REPEATS) -> float:
    """Best float32 GEMM rate of this process's BLAS, in 1e9 multiply-accumulates per second."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=out)  # first call: BLAS start-up, page faults
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - tick)
    return size**3 / best / 1e9


def measure_peak(threads: int, size: int = DEFAULT_SIZE, repeats: int = DEFAULT_REPEATS, timeout: float = 300) -> dict:
    """Measures the float32 GEMM peak with ``threads`` BLAS threads in a child process.

    Returns:
        ``{"threads", "float32_gmacs", "basis"}``.

    Raises:
        RuntimeError: the child process failed.
    """
    env = dict(os.environ)
    for name in BLAS_THREAD_VARIABLES:
        env[name] = str(threads)
    command = [sys.executable, "-m", "marsedge.benchmarks.peak", "--size", str(size), "--repeats", str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"peak measurement failed: {last}")
    gmacs = float(json.loads(done.stdout)["float32_gmacs"])
    return {
        "threads": threads,
        "float32_gmacs": round(gmacs, 2),
        "basis": f"best of {repeats} numpy float32 {size}x{size} GEMMs with {threads} BLAS thread(s)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = parser.parse_args(argv)
    print(json.dumps({"float32_gmacs": float32_gemm_gmacs(args.size, args.repeats)}))


if __name__ == "__main__":
    main()

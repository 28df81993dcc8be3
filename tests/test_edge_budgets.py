"""Start-up time and memory of the edge runtime against the budgets of the edge install.

Budgets: import + load the bundled model < 0.5 s cold, resident memory < 100 MB for a
1024x1024 frame. Memory is asserted; the timings depend on the machine and its load, so
they are recorded as test properties (`pytest --junitxml`), not asserted.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child started from a
# big pytest process (TensorFlow loaded) would report the parent's peak.
PEAK_RSS = """
def peak_rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

API = (
    PEAK_RSS
    + """
import json, time
start = time.perf_counter()
import marsedge.edge_runtime as edge
segmenter = edge.Segmenter()
loaded = time.perf_counter()
import numpy as np
result = segmenter.segment(np.random.default_rng(0).integers(0, 256, (1024, 1024), dtype=np.uint8))
print(json.dumps({"import_load_s": loaded - start, "frame_ms": result.timings, "shape": list(result.mask.shape),
                  "peak_rss_mib": peak_rss_mib()}))
"""
)

CLI = (
    PEAK_RSS
    + """
import sys
from marsedge.edge_runtime.cli import main
sys.argv[0] = "marsedge-run"
try:
    main()
finally:
    print(peak_rss_mib(), file=sys.stderr)
"""
)


def run_api() -> dict:
    proc = subprocess.run([sys.executable, "-c", API], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


MEMORY_BUDGET_MIB = 100 * 1000**2 / 1024**2  # 100 MB


@pytest.mark.slow
def test_start_up_and_memory_budgets(tmp_path, record_property):
    runs = [run_api() for _ in range(3)]
    assert all(r["shape"] == [1024, 1024] for r in runs)
    frame = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1024, 1024), dtype=np.uint8)).save(frame)
    cli = subprocess.run(
        [sys.executable, "-c", CLI, str(frame), "--out", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    cli_rss_mib = float(cli.stderr.splitlines()[-1])
    api_rss_mib = max(r["peak_rss_mib"] for r in runs)
    assert api_rss_mib < MEMORY_BUDGET_MIB, f"API peak RSS {api_rss_mib:.1f} MiB for a 1024x1024 frame"
    assert cli_rss_mib < MEMORY_BUDGET_MIB, f"marsedge-run peak RSS {cli_rss_mib:.1f} MiB with overlay"
    loads = sorted(r["import_load_s"] for r in runs)
    record_property("import_load_s_median", round(statistics.median(loads), 3))
    record_property("frame_ms", json.dumps({k: round(v) for k, v in runs[-1]["frame_ms"].items()}))
    record_property("peak_rss_mib", {"api": round(api_rss_mib, 1), "cli": round(cli_rss_mib, 1)})

"""Start-up time and memory of the edge runtime, printed for the issue's budgets.

Budgets (issue 5): import + load the bundled model < 0.5 s cold, resident memory
< 100 MB for a 1024x1024 frame. Timings depend on the machine and its load, so they are
printed, not asserted: `make test-slow` (or `pytest -m slow -k budgets -s`) shows them.
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

API = PEAK_RSS + """
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

CLI = PEAK_RSS + """
import sys
from marsedge.edge_runtime.cli import main
sys.argv[0] = "marsedge-run"
try:
    main()
finally:
    print(peak_rss_mib(), file=sys.stderr)
"""


def run_api() -> dict:
    proc = subprocess.run([sys.executable, "-c", API], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_report_start_up_time_and_memory(tmp_path, capsys):
    runs = [run_api() for _ in range(5)]
    assert all(r["shape"] == [1024, 1024] for r in runs)
    frame = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1024, 1024), dtype=np.uint8)).save(frame)
    cli = subprocess.run(
        [sys.executable, "-c", CLI, str(frame), "--out", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    cli_rss_mib = float(cli.stderr.splitlines()[-1])
    loads = sorted(r["import_load_s"] for r in runs)
    with capsys.disabled():
        print(
            f"\nedge runtime budgets: import + load bundled model median {statistics.median(loads):.3f} s "
            f"(min {loads[0]:.3f}, max {loads[-1]:.3f}; budget 0.5 s); "
            f"peak RSS, API, 1024x1024 frame {max(r['peak_rss_mib'] for r in runs):.1f} MiB; "
            f"CLI with overlay {cli_rss_mib:.1f} MiB (budget 100 MB); 1024x1024 frame ms {json.dumps({k: round(v) for k, v in runs[-1]['frame_ms'].items()})}"
        )

"""The edge runtime never loads TensorFlow or the training code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("tensorflow", "tf_keras", "marsedge.train", "marsedge.export", "marsedge.benchmarks", "pdr", "rosbags")

SCRIPT = """
import json, sys
import numpy as np
import marsedge.edge_runtime as edge
from marsedge.edge_runtime import cli  # the console script too
segmenter = edge.Segmenter(sys.argv[1])
mask = segmenter.segment(np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)).mask
edge.Segmenter(reference_kernels=True).segment(np.zeros((64, 128), np.uint8))
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "pdr", "rosbags", "pandas")
                   or m.startswith(("marsedge.train", "marsedge.export", "marsedge.benchmarks")))
print(json.dumps({"shape": list(mask.shape), "forbidden": forbidden}))
"""


def test_segmenting_loads_no_tensorflow(tiny_int8):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_int8)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["shape"] == [200, 300]
    assert report["forbidden"] == [], f"edge runtime loaded {report['forbidden']} (forbidden: {FORBIDDEN})"

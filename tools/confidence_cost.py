"""Time per 1024x1024 frame of ``marsedge-run`` with and without ``--confidence``.

    python tools/confidence_cost.py [--frames 40] [--model navcam] [--threads N]

Segments one NavCam sample enlarged to 1024x1024 (the README's quick-start frame) with
:func:`marsedge.edge_runtime.batch.segment_file`, the function ``marsedge-run`` calls (load,
segment, mask and overlay PNGs, JSON record), alternating runs without and with the
confidence map, and prints the median milliseconds of each and the difference. Run from
an older checkout (no ``confidence`` parameter) it times the plain call only.
"""

from __future__ import annotations

import argparse
import inspect
import platform
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from marsedge.edge_runtime import Segmenter
from marsedge.edge_runtime.batch import segment_file

SAMPLE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "samples" / "NLB_504390285EDR_F0520004NCAM00353M1.png"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="timed frames per setting")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        frame = out / "frame.png"
        Image.open(SAMPLE).resize((1024, 1024), Image.BICUBIC).save(frame)
        segmenter = Segmenter(args.model, threads=args.threads)
        settings = [False, True] if "confidence" in inspect.signature(segment_file).parameters else [False]
        times: dict[bool, list[float]] = {setting: [] for setting in settings}
        for index in range(args.frames + 3):
            for setting in settings:
                extra = {"confidence": True} if setting else {}
                start = time.perf_counter()
                segment_file(segmenter, frame, out, "frame", **extra)
                if index >= 3:  # warm-up
                    times[setting].append((time.perf_counter() - start) * 1e3)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    print(f"{cpu or platform.processor()}; model {segmenter.model_path.name}; {args.frames} frames per setting")
    base = statistics.median(times[False])
    print(f"without --confidence: median {base:.1f} ms/frame")
    if True in times:
        with_conf = statistics.median(times[True])
        print(f"with --confidence:    median {with_conf:.1f} ms/frame ({100 * (with_conf / base - 1):+.1f}%)")


if __name__ == "__main__":
    main()

"""Throughput of frames read from PDS products and ROS 2 bags against the same frames as PNG.

    python tools/archive_speed.py                         # ../shared/data/samples, 8 copies
    python tools/archive_speed.py FRAME.png ... --copies 4 --rounds 5
    python tools/archive_speed.py --upscale 4 --copies 4    # the samples at NavCam's 1024x1024

Writes the frames (tools/make_archives.py) as PNG files, PDS3 ``.IMG`` with attached
labels, ``.LBL`` + ``.IMG`` pairs, PDS4 pairs, 12-bit PDS3 products, and one bag per
storage (sqlite3, mcap), then segments each source the way ``marsedge-run`` does
(``segment_file`` per file, ``read_bag`` + ``write_outputs`` per message; no overlay) with
one Segmenter, frame by frame across the sources so that all see the same machine load.
Prints frames/s (the median round) per source, its ratio to PNG, the median time to read
a frame (the record's ``load`` latency: label, pixels, decoding) and the CPU (``lscpu``). The readers' one-time import
(``pdr`` pulls pandas) is timed apart and not in the rates.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import make_archives  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "samples"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def upscaled(frames: list[Path], factor: int, folder: Path) -> list[Path]:
    """The frames enlarged ``factor`` times (each pixel a block), as grey PNGs in ``folder``."""
    folder.mkdir()
    made = []
    for path in frames:
        pixels = np.asarray(Image.open(path).convert("L"))
        made.append(folder / path.name)
        Image.fromarray(np.kron(pixels, np.ones((factor, factor), np.uint8))).save(made[-1])
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", nargs="*", type=Path, help="8-bit grey PNG frames (default: the shared samples)")
    parser.add_argument("--copies", type=int, default=8, help="each frame this many times")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every source; the median is reported")
    parser.add_argument("--upscale", type=int, default=1, help="enlarge each frame N times (4: NavCam's 1024x1024)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--model", type=Path, default=None, help="model (default: the bundled int8 model)")
    args = parser.parse_args(argv)
    frames = args.frames or sorted(SAMPLES.glob("*.png"))
    if not frames:
        print("error: no frames given and ../shared/data/samples is absent", file=sys.stderr)
        return 1

    start = time.perf_counter()
    import pdr  # noqa: F401
    import rosbags.highlevel  # noqa: F401

    imports_s = time.perf_counter() - start

    from marsedge.edge_runtime import Segmenter
    from marsedge.edge_runtime.batch import frame_gray, segment_file, write_outputs
    from marsedge.edge_runtime.sources.rosbag import read_bag

    segmenter = Segmenter(args.model, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="marsedge-archive-speed-") as tmp:
        root = Path(tmp) / "archives"
        if args.upscale > 1:
            frames = upscaled(frames, args.upscale, Path(tmp) / "frames")
        size = "x".join(map(str, Image.open(frames[0]).size))
        make_archives.main([*map(str, frames), "--out", str(root), "--copies", str(args.copies)])
        files = {
            "PNG": sorted((root / "png").glob("*.png")),
            "PDS3 .IMG (attached)": sorted((root / "pds3").glob("*.IMG")),
            "PDS3 .LBL + .IMG": sorted((root / "pds3-detached").glob("*.LBL")),
            "PDS4 .xml + .img": sorted((root / "pds4").glob("*.xml")),
            "PDS3 12-bit": sorted((root / "pds3-16bit").glob("*.IMG")),
        }
        bags = {"bag sqlite3 (mono8)": root / "bag-sqlite3", "bag mcap (mono8)": root / "bag-mcap"}
        count = len(files["PNG"])
        out = Path(tmp) / "out"
        out.mkdir()

        def file_steps(paths: list[Path]):
            for i, path in enumerate(paths):
                yield lambda i=i, path=path: segment_file(segmenter, path, out, f"f{i}", overlay=False)["latency_ms"]

        def bag_steps(bag: Path):
            frames = read_bag(bag)

            def step() -> dict[str, float]:
                frame = next(frames)
                gray, depth = frame_gray(segmenter, frame.levels)
                result = segmenter.segment(gray)
                return write_outputs(
                    segmenter, gray, result, str(bag), out, f"m{frame.index}", False, frame.load_ms, depth=depth
                )["latency_ms"]

            for _ in range(count):
                yield step

        def sources():
            steps = {name: file_steps(paths) for name, paths in files.items()}
            steps.update({name: bag_steps(bag) for name, bag in bags.items()})
            return steps

        # Frame by frame across the sources (the order rotating), so that every source sees
        # the same load from whatever else the machine runs; the sum per source is its time.
        seconds: dict[str, list[float]] = {name: [] for name in sources()}
        loads: dict[str, list[float]] = {name: [] for name in seconds}  # ms to read each frame
        for round_ in range(args.rounds + 1):  # round 0 warms caches and the interpreter
            steps = sources()
            names = list(steps)
            spent = dict.fromkeys(names, 0.0)
            for i in range(count):
                shift = (i + round_) % len(names)
                for name in names[shift:] + names[:shift]:
                    step = next(steps[name])
                    tick = time.perf_counter()
                    latency = step()
                    spent[name] += time.perf_counter() - tick
                    if round_:
                        loads[name].append(latency["load"])
            if round_:
                for name in names:
                    seconds[name].append(spent[name])

    png = count / statistics.median(seconds["PNG"])
    print(f"{count} frames ({len(frames)} distinct, {size}), {args.rounds} rounds; {cpu_name()}")
    print(f"readers' import (once per process): {imports_s:.2f} s")
    print("| source | frames/s | vs PNG | read ms/frame (median) |\n|---|---|---|---|")
    for name, values in seconds.items():
        rate = count / statistics.median(values)
        print(f"| {name} | {rate:.1f} | {rate / png:.1%} | {statistics.median(loads[name]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

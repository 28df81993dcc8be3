"""Copy a run's QAT int8 (and float32) export into the package as the bundled model.

    python tools/bundle_model.py runs/mars_cpu [--input-scale 0.5]

The AN2DL tiles were cut from 256x256 AI4Mars frames reduced 2x, so the bundled model's
metadata says ``input.scale = 0.5``: a 256x256 frame is resized to 128x128 before tiling
and the mask is resized back. Prints the sha256 of what it wrote.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from marsedge.atomic import write_bytes
from marsedge.edge_runtime.metadata import embed_metadata, read_metadata

MODELS = Path(__file__).resolve().parents[1] / "marsedge" / "edge_runtime" / "models"
BUNDLE = {"marsedge_qat.tflite": "marsedge_int8.tflite", "marsedge_float32.tflite": "marsedge_float32.tflite"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--input-scale", type=float, default=0.5)
    args = parser.parse_args()
    for source_name, target_name in BUNDLE.items():
        source = args.run / "export" / source_name
        content = source.read_bytes()
        metadata = read_metadata(content)
        metadata["input"]["scale"] = args.input_scale
        metadata["name"] = f"marsedge-bundled-{metadata['precision']}"
        metadata["bundled_from"] = str(source)
        target = write_bytes(MODELS / target_name, embed_metadata(content, metadata))
        digest = hashlib.sha256(target.read_bytes()).hexdigest()[:16]
        print(f"{source} -> {target} ({target.stat().st_size / 1024:.0f} KB, sha256 {digest})")


if __name__ == "__main__":
    main()

"""Whole camera frames through the edge runtime: cost per frame size and mean IoU.

Tile data sets (the AN2DL .npz) are at model resolution already; real users feed whole
frames of their camera's size, which the runtime resizes to the model's ground resolution
(``model_pixels_per_frame`` over the frame's longer side). This module measures that
path: :func:`frame_costs` (ms per frame and peak memory of a runtime process for frames
of 256, 1024 and 2048 pixels; part of ``marsedge bench``) and :func:`evaluate_frames`
(mean IoU of labelled frames rendered at any size, or changed by any function: the
AI4Mars frames behind the AN2DL tiles are read by :func:`read_ai4mars_frames`).

    python -m marsedge.benchmarks.frames MODEL.tflite --config configs/marsedge_navcam.json

prints the whole-frame mean IoU of MODEL on that config's test split at 128..2048 px.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from marsedge.core.classes import CLASS_NAMES
from marsedge.core.metrics import confusion_matrix, iou_report
from marsedge.edge_runtime import Segmenter
from marsedge.edge_runtime.resample import resize_nearest

logger = logging.getLogger(__name__)

FRAME_SIZES = (256, 1024, 2048)
EVAL_SIZES = (128, 256, 512, 1024, 2048)
AI4MARS_IMAGES = Path("msl") / "ncam" / "images" / "edr"
AI4MARS_LABELS = Path("msl") / "ncam" / "labels" / "train"
AI4MARS_UNLABELED = 255

Render = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def frame_costs(
    models: Sequence[str | Path],
    sizes: Sequence[int] = FRAME_SIZES,
    threads: int | None = None,
    runs: int = 3,
    rss: bool = True,
    reference_kernels: bool = False,
) -> list[dict[str, Any]]:
    """Milliseconds per whole square frame (resize, tiles, mask back: ``Segmenter.segment``)
    and, with ``rss``, the peak resident memory of a separate runtime process segmenting
    one such frame; one row per model and size.

    Returns:
        ``[{"model", "precision", "size", "threads", "model_input", "tiles", "ms_p50",
        "ms_min", "peak_rss_mb"}]``.
    """
    from marsedge.benchmarks.rss import measure_rss

    rows = []
    rng = np.random.default_rng(0)
    for model in models:
        segmenter = Segmenter(model, threads=threads, reference_kernels=reference_kernels)
        for size in sizes:
            frame = rng.integers(0, 256, (size, size), dtype=np.uint8)
            first = segmenter.segment(frame)  # untimed: first pass at this size
            times = []
            for _ in range(max(runs, 1)):
                tick = time.perf_counter()
                segmenter.segment(frame)
                times.append((time.perf_counter() - tick) * 1e3)
            side = round(size * first.scale)
            peak = None
            if rss:
                try:
                    peak = measure_rss(str(model), threads, (size, size), reference_kernels)["peak_mb"]
                except (RuntimeError, OSError) as exc:
                    logger.warning("%s", exc)
            rows.append(
                {
                    "model": str(model),
                    "precision": segmenter.metadata.get("precision"),
                    "size": size,
                    "threads": threads,
                    "model_input": [side, side],
                    "tiles": first.tiles,
                    "ms_p50": round(statistics.median(times), 3),
                    "ms_min": round(min(times), 3),
                    "peak_rss_mb": peak,
                }
            )
    return rows


def frames_table(rows: Sequence[dict[str, Any]]) -> str:
    """The :func:`frame_costs` rows as a Markdown table."""
    lines = [
        "| model | frame | model input | tiles | ms/frame p50 | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        rss = f"{row['peak_rss_mb']:.1f}" if row.get("peak_rss_mb") is not None else "-"
        lines.append(
            f"| {row['precision']} ({Path(row['model']).name}) | {row['size']}x{row['size']} | "
            f"{row['model_input'][0]}x{row['model_input'][1]} | {row['tiles']} | {row['ms_p50']:.1f} | {rss} |"
        )
    return "\n".join(lines)


def ai4mars_to_marsedge(label: np.ndarray) -> np.ndarray:
    """AI4Mars label coding (0 soil, 1 bedrock, 2 sand, 3 big rock, 255 unlabeled) to
    marsedge class ids (``k -> k + 1``, ``255 -> 0``)."""
    label = np.asarray(label)
    return np.where(label == AI4MARS_UNLABELED, 0, label.astype(np.int64) + 1).astype(np.uint8)


def read_ai4mars_frames(root: str | Path, frames: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grey frames and marsedge-coded masks ``(N, H, W)`` uint8 from an AI4Mars-layout
    folder (``msl/ncam/images/edr/<id>.JPG``, ``msl/ncam/labels/train/<id>.png``).

    Args:
        root: the folder holding ``msl/``.
        frames: positions in sorted id order (frame k of the shared folder is the source
            of tiles 2k and 2k+1 of the AN2DL file); None for all.

    Raises:
        FileNotFoundError: no such folder or a frame without its label.
    """
    root = Path(root)
    paths = sorted((root / AI4MARS_IMAGES).glob("*.JPG"))
    if not paths:
        raise FileNotFoundError(f"{root / AI4MARS_IMAGES}: no AI4Mars frames")
    chosen = [paths[k] for k in frames] if frames is not None else paths
    images, masks = [], []
    for path in chosen:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("L")))
        with Image.open(root / AI4MARS_LABELS / f"{path.stem}.png") as label:
            masks.append(ai4mars_to_marsedge(np.asarray(label)))
    return np.stack(images), np.stack(masks)


def render_size(size: int) -> Render:
    """A render that makes a frame ``size`` pixels square (bicubic) and its mask the same
    size (nearest neighbour, ids only)."""

    def render(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if image.shape == (size, size):
            return image, mask
        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
        return resized, resize_nearest(mask, size, size)

    return render


def evaluate_frames(
    segmenter: Segmenter, images: np.ndarray, masks: np.ndarray, render: Render | None = None
) -> dict[str, Any]:
    """Mean IoU (classes 1..4, unlabeled pixels ignored), per-class IoU and confusion
    matrix of whole frames segmented as a user would: each frame (after ``render``, e.g.
    :func:`render_size` or a corruption) goes through ``segmenter.segment``, which resizes
    it by the model's field of view (or the segmenter's override), and the mask comes back
    at the rendered frame's size, where it is scored.
    """
    matrix = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), dtype=np.int64)
    for image, mask in zip(images, masks):
        frame, truth = render(image, mask) if render is not None else (image, mask)
        matrix += confusion_matrix(truth[None], segmenter.segment(frame).mask[None])
    report = iou_report(matrix, CLASS_NAMES)
    report["frames"] = len(images)
    return report


def split_frames(config_path: str | Path, split_name: str = "test") -> tuple[np.ndarray, dict[str, str]]:
    """Frame positions (in the AI4Mars folder's sorted order) of a training config's
    ``split_name`` split (test or val), and the split's fingerprint (compare with a
    model's ``source_split``)."""
    from marsedge.train import rundir, trainer
    from marsedge.train.config import TrainConfig
    from marsedge.train.data import find_ai4mars

    path = Path(config_path)
    if path.name == rundir.CONFIG_FILE and "train" in json.loads(path.read_text()):  # a run directory's own
        config = rundir.read_run(path.parent, need_weights=False).config
    else:
        config = TrainConfig.load(path)
    _, split, _, data_hash = trainer.compute_split(config)
    data = Path(config.data)
    if data.is_dir() and find_ai4mars(data) is not None:  # a run on whole frames: its split is of frames
        return np.asarray(split[split_name]), rundir.split_fingerprint(split, data_hash)
    return np.unique(split[split_name] // 2), rundir.split_fingerprint(split, data_hash)  # frame k gave tiles 2k, 2k+1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Whole-frame mean IoU of a model on a config's test split")
    parser.add_argument("model")
    parser.add_argument("--config", required=True, help="the training config whose test split is scored")
    parser.add_argument("--frames-root", default="../shared/data/ai4mars-msl-256")
    parser.add_argument("--sizes", default=",".join(map(str, EVAL_SIZES)))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from marsedge.core.metadata import read_metadata

    frames, fingerprint = split_frames(args.config)
    recorded = read_metadata(args.model).get("source_split")
    if recorded and recorded != fingerprint:
        print(f"warning: {args.model} was not trained on {args.config}'s split")
    images, masks = read_ai4mars_frames(args.frames_root, frames)
    segmenter = Segmenter(args.model, threads=args.threads)
    print(f"{len(frames)} test frames of {args.config}, {args.model}")
    print("| frame size | mean IoU | " + " | ".join(CLASS_NAMES[1:]) + " |")
    print("|---" * (2 + len(CLASS_NAMES) - 1) + "|")
    for size in (int(s) for s in args.sizes.split(",")):
        report = evaluate_frames(segmenter, images, masks, render_size(size))
        cells = " | ".join(f"{report['class_iou'][c]:.4f}" for c in CLASS_NAMES[1:])
        print(f"| {size}x{size} | {report['mean_iou']:.4f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()

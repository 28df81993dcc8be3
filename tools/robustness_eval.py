"""How a .tflite model holds up when the image changes the way a rover's camera might.

    python tools/robustness_eval.py runs/marsedge_navcam --split test             # the bundled model
    python tools/robustness_eval.py runs/marsedge_navcam --model runs/marsedge_navcam/export/marsedge_float32.tflite

Scores the model through the edge runtime on the run's split, once on the tiles as they
are and once per perturbation: exposure (gain, offset, gamma, contrast), sensor noise,
defocus blur, JPEG compression, lower resolution, and the two flips. Prints one markdown
row each: mean IoU (classes 1..4), its change against the clean tiles, per-class IoU, and
the share of pixels whose class is unchanged. Labels stay as they are (a flip moves them
with the image). Characterises the model's limits (MODEL_CARD.md); chooses nothing, so it
may use the test split. Needs the train extra (to read the run's split).
"""
from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from marsedge.train.data import CLASS_NAMES
from marsedge.train.metrics import confusion_matrix, iou_report

Perturbation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _levels(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _pil(tile: np.ndarray, operation: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.asarray(operation(Image.fromarray(tile)), dtype=np.uint8)


def _jpeg(quality: int) -> Perturbation:
    def apply(tile, rng):
        buffer = io.BytesIO()
        Image.fromarray(tile).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.uint8)

    return apply


def _resolution(factor: float) -> Perturbation:
    def apply(tile, rng):
        height, width = tile.shape
        small = (max(1, round(width * factor)), max(1, round(height * factor)))
        return _pil(tile, lambda im: im.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR))

    return apply


# name -> (image change, whether the labels are flipped with it: None, "lr" or "ud")
PERTURBATIONS: dict[str, tuple[Perturbation, str | None]] = {
    "clean": (lambda t, rng: t, None),
    "darker (gain 0.7)": (lambda t, rng: _levels(t * 0.7), None),
    "brighter (gain 1.3, clipped)": (lambda t, rng: _levels(t * 1.3), None),
    "offset +25 (haze)": (lambda t, rng: _levels(t.astype(np.float32) + 25), None),
    "gamma 0.7 (lifted shadows)": (lambda t, rng: _levels(255 * (t / 255.0) ** 0.7), None),
    "gamma 1.5 (deeper shadows)": (lambda t, rng: _levels(255 * (t / 255.0) ** 1.5), None),
    "contrast 0.6": (lambda t, rng: _levels(t.mean() + 0.6 * (t - t.mean())), None),
    "contrast 1.4": (lambda t, rng: _levels(t.mean() + 1.4 * (t - t.mean())), None),
    "noise sigma 2": (lambda t, rng: _levels(t + rng.normal(0, 2, t.shape)), None),
    "noise sigma 4": (lambda t, rng: _levels(t + rng.normal(0, 4, t.shape)), None),
    "blur (Gaussian radius 0.5)": (lambda t, rng: _pil(t, lambda im: im.filter(ImageFilter.GaussianBlur(0.5))), None),
    "blur (Gaussian radius 1)": (lambda t, rng: _pil(t, lambda im: im.filter(ImageFilter.GaussianBlur(1))), None),
    "JPEG quality 90": (_jpeg(90), None),
    "JPEG quality 50": (_jpeg(50), None),
    "half resolution, resized back": (_resolution(0.5), None),
    "left-right mirror": (lambda t, rng: t[:, ::-1], "lr"),
    "upside down": (lambda t, rng: t[::-1, :], "ud"),
}


def _flipped(batch: np.ndarray, flip: str | None) -> np.ndarray:
    """``(N, H, W)`` arrays mirrored left-right ("lr") or up-down ("ud"); a flip is its own inverse."""
    if flip == "lr":
        return np.ascontiguousarray(batch[:, :, ::-1])
    if flip == "ud":
        return np.ascontiguousarray(batch[:, ::-1, :])
    return batch


def perturb(images: np.ndarray, masks: np.ndarray, name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The tiles and labels after perturbation ``name`` (noise drawn from ``seed``)."""
    change, flip = PERTURBATIONS[name]
    rng = np.random.default_rng(seed)
    return np.stack([change(tile, rng) for tile in images]), _flipped(masks, flip)


def rows(model: Path, images: np.ndarray, masks: np.ndarray, threads: int = 2) -> list[tuple[str, dict, float]]:
    """``(perturbation, iou report, share of pixels unchanged against clean)`` per perturbation."""
    from marsedge.benchmarks.bench import model_resolution
    from marsedge.edge_runtime import Segmenter

    result, clean = [], None
    with model_resolution(Segmenter(model, threads=threads)) as segmenter:
        for name, (_, flip) in PERTURBATIONS.items():
            tiles, truth = perturb(images, masks, name)
            predicted = np.stack([segmenter.segment(tile).mask for tile in tiles])
            clean = predicted if clean is None else clean
            result.append((name, iou_report(confusion_matrix(truth, predicted), CLASS_NAMES),
                           float(np.mean(_flipped(predicted, flip) == clean))))
    return result


def table(results: list[tuple[str, dict, float]], title: str) -> str:
    names = list(CLASS_NAMES[1:])
    lines = [f"| {title} | mIoU | Δ | {' | '.join(names)} | pixels unchanged |",
             "|---|---|---|" + "---|" * len(names) + "---|"]
    base = results[0][1]["mean_iou"]
    for name, report, same in results:
        cells = " | ".join(f"{report['class_iou'][n]:.3f}" for n in names)
        lines.append(f"| {name} | {report['mean_iou']:.3f} | {report['mean_iou'] - base:+.3f} | {cells} | {same:.1%} |")
    return "\n".join(lines)


def main() -> None:
    from marsedge.train import rundir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory whose split gives the labelled tiles")
    parser.add_argument("--model", type=Path, help=".tflite to score (default: the run's QAT int8 export)")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run = rundir.read_run(args.run, need_weights=False)
    model = args.model or args.run / "export" / "marsedge_qat.tflite"
    tiles = rundir.split_tiles(run, args.split)
    results = rows(model, tiles.images, tiles.masks, args.threads)
    print(table(results, f"{model.name}, {args.split} split ({len(tiles)} tiles)"))


if __name__ == "__main__":
    main()

"""The corruption benchmark: how a model holds up on frames as real cameras and downlinks
deliver them.

Every labelled frame is changed by one corruption at one severity, at the frame's own
resolution, and segmented through the edge runtime exactly as a user's frame would be
(resized by the model's field of view, mask scored at the frame's size):

- ``noise``: Gaussian sensor noise, sigma 2 / 4 / 8 grey levels;
- ``blur``: Gaussian blur (slight defocus), radius 0.5 / 1 / 2 pixels;
- ``jpeg``: JPEG re-compression, quality 90 / 70 / 50;
- ``gamma``: exposure, ``255 * (x / 255) ** g`` for g = 0.6 / 0.8 / 1.3 / 1.6 (>1 darker);
- ``size``: the frame resized (bicubic) to 128 / 512 / 1024 pixels.

Severities are listed mildest first; the "middle" one is the second (gamma: 0.8 and 1.3)
and the "worst" the last (gamma: 0.6 and 1.6). Noise is seeded per frame from its pixels,
so a table is deterministic. The table states each figure's share of the clean mIoU.
"""

from __future__ import annotations

import io
import json
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from marsedge.benchmarks.frames import Render, evaluate_frames, render_size
from marsedge.core.classes import CLASS_NAMES
from marsedge.errors import DataError, MarsEdgeError

logger = logging.getLogger(__name__)

BIG_ROCK = 4


@dataclass(frozen=True)
class Corruption:
    """One corruption: its name, its severities (mildest first) and how to apply one."""

    name: str
    levels: tuple[float, ...]
    apply: Callable[[np.ndarray, float, int], np.ndarray]
    unit: str

    def middle(self) -> tuple[float, ...]:
        """The middle severities (one, or the two inner ones of four)."""
        return self.levels[1:-1] if len(self.levels) > 3 else (self.levels[1],)

    def worst(self) -> tuple[float, ...]:
        return (self.levels[0], self.levels[-1]) if len(self.levels) > 3 else (self.levels[-1],)


def _noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(image.tobytes())])
    return np.clip(np.rint(image + rng.normal(0.0, sigma, image.shape)), 0, 255).astype(np.uint8)


def _blur(image: np.ndarray, radius: float, seed: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def _jpeg(image: np.ndarray, quality: float, seed: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L"))


def _gamma(image: np.ndarray, gamma: float, seed: int) -> np.ndarray:
    table = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    return table[image]


CORRUPTIONS = (
    Corruption("noise", (2, 4, 8), _noise, "sigma"),
    Corruption("blur", (0.5, 1, 2), _blur, "radius px"),
    Corruption("jpeg", (90, 70, 50), _jpeg, "quality"),
    Corruption("gamma", (0.6, 0.8, 1.3, 1.6), _gamma, "gamma"),
    Corruption("size", (128, 512, 1024), lambda image, size, seed: image, "px"),
)
NAMES = tuple(c.name for c in CORRUPTIONS)


def corruption_render(corruption: Corruption, level: float, seed: int = 0) -> Render:
    """A render for :func:`marsedge.benchmarks.frames.evaluate_frames`."""
    if corruption.name == "size":
        return render_size(int(level))

    def render(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return corruption.apply(image, level, seed), mask

    return render


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)
    hits = matrix[BIG_ROCK, BIG_ROCK]
    return {
        "mean_iou": report["mean_iou"],
        "class_iou": report["class_iou"],
        "big_rock_recall": float(hits / matrix[BIG_ROCK, 1:].sum()) if matrix[BIG_ROCK, 1:].sum() else None,
        "big_rock_precision": float(hits / matrix[1:, BIG_ROCK].sum()) if matrix[1:, BIG_ROCK].sum() else None,
    }


def corruption_table(
    segmenter,
    images: np.ndarray,
    masks: np.ndarray,
    names: tuple[str, ...] = NAMES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Clean and corrupted whole-frame mIoU of one model (a :class:`Segmenter`).

    Returns ``{"clean": {...}, "rows": [{"corruption", "level", "mean_iou", "share", ...}],
    "middle_min_share", "worst_min_share"}``; shares are of the clean mIoU.
    """
    clean = _summary(evaluate_frames(segmenter, images, masks))
    rows = []
    for corruption in CORRUPTIONS:
        if corruption.name not in names:
            continue
        for level in corruption.levels:
            if progress:
                progress(f"{corruption.name} {level:g}")
            result = _summary(evaluate_frames(segmenter, images, masks, corruption_render(corruption, level, seed)))
            severity = "middle" if level in corruption.middle() else "worst" if level in corruption.worst() else "mild"
            rows.append(
                {
                    "corruption": corruption.name,
                    "level": level,
                    "severity": severity,
                    **result,
                    "share": result["mean_iou"] / clean["mean_iou"] if clean["mean_iou"] else None,
                }
            )
    shares = {
        s: [r["share"] for r in rows if r["severity"] == s and r["share"] is not None] for s in ("middle", "worst")
    }
    return {
        "frames": len(images),
        "clean": clean,
        "rows": rows,
        "middle_min_share": min(shares["middle"]) if shares["middle"] else None,
        "worst_min_share": min(shares["worst"]) if shares["worst"] else None,
    }


def markdown(tables: dict[str, dict[str, Any]]) -> str:
    """One markdown table: a row per condition, a column pair (mIoU, share) per model."""
    labels = list(tables)
    first = tables[labels[0]]
    head = "| condition | " + " | ".join(f"{label} mIoU | share" for label in labels) + " |"
    lines = [head, "|---" * (1 + 2 * len(labels)) + "|"]
    lines.append("| clean | " + " | ".join(f"{tables[k]['clean']['mean_iou']:.3f} | 100%" for k in labels) + " |")
    for i, row in enumerate(first["rows"]):
        cells = " | ".join(
            f"{tables[k]['rows'][i]['mean_iou']:.3f} | {tables[k]['rows'][i]['share']:.0%}" for k in labels
        )
        lines.append(f"| {row['corruption']} {row['level']:g} ({row['severity']}) | {cells} |")
    for key in ("middle_min_share", "worst_min_share"):
        lines.append(
            f"| lowest share, {key.split('_')[0]} severity | "
            + " | ".join(f" | {tables[k][key]:.0%}" for k in labels)
            + " |"
        )
    return "\n".join(lines)


def plot(tables: dict[str, dict[str, Any]], path) -> None:
    """A bar chart of each condition's share of clean mIoU, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(tables)
    conditions = [f"{r['corruption']} {r['level']:g}" for r in tables[labels[0]]["rows"]]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(conditions)), 4))
    for i, label in enumerate(labels):
        shares = [100 * (r["share"] or 0) for r in tables[label]["rows"]]
        ax.bar(np.arange(len(conditions)) + i * width, shares, width, label=label)
    for level in (95, 85):
        ax.axhline(level, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(np.arange(len(conditions)) + width * (len(labels) - 1) / 2, conditions, rotation=60, ha="right")
    ax.set_ylabel("% of clean mIoU")
    ax.set_ylim(0, 110)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    from marsedge.core.atomic import write_bytes

    write_bytes(path, buffer.getvalue())


def precision_models(model: str | Path) -> dict[str, Path]:
    """The .tflite files a corruption table covers, by precision label: a .tflite and its
    sibling of the other precision (``*_int8.tflite`` beside ``*_float32.tflite``, as the
    bundled models and ``marsedge export`` name them), or every .tflite a run exported."""
    from marsedge.core.metadata import read_metadata

    path = Path(model)
    if path.is_dir():
        candidates = sorted((path / "export").glob("*.tflite")) if (path / "export").is_dir() else []
        if not candidates:
            raise MarsEdgeError(f"{path}: no exported .tflite under export/ (run `marsedge export {path}` first)")
    elif path.suffix == ".tflite":
        if not path.is_file():
            raise MarsEdgeError(f"{path}: no such model file")
        candidates = [path]
        for own, other in (("_int8", "_float32"), ("_float32", "_int8"), ("_qat", "_float32")):
            if path.stem.endswith(own):
                sibling = path.with_name(path.stem[: -len(own)] + other + path.suffix)
                if sibling.is_file():
                    candidates.append(sibling)
                break
    else:
        raise MarsEdgeError(f"{path}: not a .tflite or a run directory")
    models: dict[str, Path] = {}
    for candidate in candidates:
        label = str(read_metadata(candidate).get("precision") or candidate.stem)
        models.setdefault(label, candidate)
    return models


def split_frame_positions(model: str | Path, config: str | Path, root: str | Path, split: str = "test") -> np.ndarray:
    """Positions (sorted id order) of the frames behind ``config``'s ``split`` (test or val), checked
    against the split the model records (``source_split``): frames a model trained on
    must not score it.

    Raises:
        DataError: the model was trained on another split, or the frame folder does not
            hold the frames the tile file was cut from.
    """
    from marsedge.benchmarks.frames import split_frames
    from marsedge.core.metadata import read_metadata

    frames, fingerprint = split_frames(config, split)
    recorded = read_metadata(model).get("source_split") if Path(model).suffix == ".tflite" else None
    if recorded and recorded.get(split) != fingerprint.get(split):
        raise DataError(f"{model}: was not trained on the split of {config}; its {split} frames are unknown")
    count = len(list((Path(root) / "msl" / "ncam" / "images" / "edr").glob("*.JPG")))
    if count and frames.max() >= count:
        raise DataError(f"{root}: {count} frames, but the {split} split of {config} names frame {frames.max()}")
    return frames


PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # a checkout's root: configs/ lives there


def recipe_config(model: str | Path) -> Path | None:
    """The training config whose split a model was trained on: a run's ``config.json``,
    the ``recipe`` a .tflite's metadata names (found beside the working directory or in
    the checkout the package runs from), or for a file that ``marsedge export`` wrote into
    ``RUN/export`` its run's ``config.json``; None when none is at hand."""
    from marsedge.benchmarks.settings import EXPORT_DIR
    from marsedge.core.metadata import read_metadata

    path = Path(model)
    if path.is_dir():
        return path / "config.json" if (path / "config.json").is_file() else None
    recipe = read_metadata(path).get("recipe")
    if isinstance(recipe, str):
        for candidate in (Path(recipe), PACKAGE_ROOT / recipe):
            if candidate.is_file():
                return candidate
    run_config = path.parent.parent / "config.json"
    if path.parent.name == EXPORT_DIR and run_config.is_file():
        return run_config
    return None


def select_frames(
    model: str | Path,
    root: str | Path,
    split: str = "test",
    config: str | Path | None = None,
    count: int | None = None,
) -> np.ndarray | None:
    """Positions of the frames to score: the model's test split (from ``config`` or its
    recipe; ``split="val"`` for its val split, to choose between models without touching
    test), or None for every frame with ``split="all"``; ``count`` keeps that many,
    spread evenly over them.

    Raises:
        UsageError: another split, or a test split nothing names.
        DataError: as :func:`test_frames`.
    """
    from marsedge.errors import UsageError

    if split not in ("test", "val", "all"):
        raise UsageError(f"the corruption benchmark scores the test or val split or all frames, not {split!r}")
    positions = None
    if split in ("test", "val"):
        config = config or recipe_config(model)
        if config is None:
            raise UsageError(f"{model}: no training config names its {split} split; give --config, or --split all")
        positions = split_frame_positions(model, config, root, split)
    if count:
        if positions is None:
            positions = np.arange(count)
        else:
            positions = positions[:: max(1, len(positions) // count)][:count]
    return positions


def corruption_report(
    models: dict[str, Path],
    root: str | Path,
    frames: Sequence[int] | None = None,
    threads: int | None = None,
    names: tuple[str, ...] = NAMES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`corruption_table` of each model on the same labelled whole frames of an
    AI4Mars-layout folder (``frames``: positions in sorted id order; None for all).

    Returns ``{"data", "frames", "seed", "models": {label: path}, "tables": {label: table}}``.
    """
    from marsedge.benchmarks.frames import read_ai4mars_frames
    from marsedge.edge_runtime import Segmenter

    images, masks = read_ai4mars_frames(root, frames)
    if not len(images):
        raise DataError(f"{root}: no labelled frames to score")
    tables = {}
    for label, path in models.items():
        segmenter = Segmenter(path, threads=threads)
        step = (lambda text, label=label: progress(f"{label}: {text}")) if progress else None
        tables[label] = corruption_table(segmenter, images, masks, names, seed, step)
    return {
        "data": str(root),
        "frames": int(len(images)),
        "seed": seed,
        "models": {label: str(path) for label, path in models.items()},
        "tables": tables,
    }


def write_json(report: dict[str, Any], path: str | Path) -> None:
    from marsedge.core.atomic import write_bytes

    write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())


__all__ = [
    "corruption_report",
    "precision_models",
    "recipe_config",
    "select_frames",
    "split_frame_positions",
    "write_json",
    "CORRUPTIONS",
    "NAMES",
    "CLASS_NAMES",
    "Corruption",
    "corruption_render",
    "corruption_table",
    "markdown",
    "plot",
]

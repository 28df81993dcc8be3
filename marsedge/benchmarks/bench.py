"""The measurement behind ``marsedge bench``: every export of a run, side by side.

For each model: accuracy on the same labelled tiles (mean IoU over classes 1..4, IoU per
class, pixel agreement with the float reference), then through the edge runtime's own
code path (:class:`~marsedge.edge_runtime.Segmenter`, the path the rover runs) for each
thread count: load time, first inference, latency per tile and per full frame after
warm-up, FPS and GMAC/s against the machine's measured peak; peak resident memory of a
separate runtime process; file size.

The Keras float model (``best.weights.h5`` of a run) is scored for accuracy only, as the
reference the exports are compared with: it never runs on the board. TensorFlow is
imported only for it, after every TFLite timing, so it cannot disturb them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from marsedge import __version__
from marsedge.edge_runtime import ModelError, Segmenter, read_metadata
from marsedge.errors import MarsEdgeError, UsageError
from marsedge.train.data import CLASS_NAMES, TileSet, load_tiles
from marsedge.train.metrics import SCORED_CLASSES, confusion_matrix, iou_report, pixel_agreement

logger = logging.getLogger(__name__)

SCHEMA = "marsedge-bench/1"
FORMAT_ORDER = ("keras", "float32", "float16", "dynamic", "int8-ptq", "int8-qat")
INT8_FORMATS = ("int8-ptq", "int8-qat")
SPLITS = ("train", "val", "test")
EXPORT_DIR = "export"

Progress = Callable[[int, int, str], None]


class BenchError(MarsEdgeError):
    """Bad benchmark input: no models, no labelled tiles, a file that is not a model."""


DEFAULT_SPLIT = "val"


@dataclass(frozen=True)
class BenchSettings:
    """What ``marsedge bench`` measures; the CLI maps its options onto these one to one.

    Attributes:
        sources: run directories, export folders or .tflite files.
        data: labelled tiles (AN2DL .npz or PNG folder); with a run, replaces the run's
            data file (the run's split indices still apply).
        split: the run's split to score ("val" or "test"; "train" allowed); None: "val".
            Only with a run: files alone have no split (``data`` is scored whole), and
            naming one without a run is an error rather than silently scoring every tile.
        tiles: score at most this many tiles, evenly spaced over the split; 0 = all.
        threads: interpreter thread counts to time.
        runs: timed single-tile inferences per model and thread count.
        warmup: untimed single-tile inferences before them.
        frame_size: (height, width) of the full frame timed through the Segmenter's tiling.
        frame_runs: timed full frames per model and thread count (after one untimed);
            0 skips frames.
        keras: also score the run's Keras float model (needs the [train] extra).
        rss: measure the peak memory of a separate runtime process per model.
        peak: measure the machine's GEMM peak per thread count.
        reference_kernels: run the builtin reference kernels instead of XNNPACK (slow;
            for correctness under an emulator, where XNNPACK does not run).
        tta: also measure every .tflite with test-time flip averaging (the runtime's
            ``--tta``: each tile and its mirror image, logits averaged), as a row of its own.
    """

    sources: tuple[str, ...]
    data: str | None = None
    split: str | None = None
    tiles: int = 0
    threads: tuple[int, ...] = (1, 2)
    runs: int = 50
    warmup: int = 5
    frame_size: tuple[int, int] = (1024, 1024)
    frame_runs: int = 3
    keras: bool = True
    rss: bool = True
    peak: bool = True
    reference_kernels: bool = False
    tta: bool = False

    @property
    def run_split(self) -> str:
        """The split scored when a run is given (``split``, or val)."""
        return self.split or DEFAULT_SPLIT

    def command(self) -> str:
        """The ``marsedge bench`` command line that measures exactly this."""
        args = ["marsedge", "bench", *self.sources]
        if self.data:
            args += ["--data", self.data]
        args += ["--split", self.split] if self.split else []
        args += [
            "--tiles", str(self.tiles), "--threads", ",".join(map(str, self.threads)),
            "--runs", str(self.runs), "--warmup", str(self.warmup),
            "--frame-size", f"{self.frame_size[0]}x{self.frame_size[1]}", "--frame-runs", str(self.frame_runs),
        ]
        args += [] if self.keras else ["--no-keras"]
        args += [] if self.rss else ["--no-rss"]
        args += [] if self.peak else ["--no-peak"]
        args += ["--reference-kernels"] if self.reference_kernels else []
        args += ["--tta"] if self.tta else []
        return shlex.join(args)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("give at least one run directory or .tflite file")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"thread counts must be 1 or more, got {list(self.threads)}")
        for name in ("tiles", "warmup", "frame_runs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.runs < 1:
            raise ValueError(f"runs must be 1 or more, got {self.runs}")
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame size must be two positive numbers, got {self.frame_size}")


def parse_threads(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``.

    Raises:
        ValueError: not a comma-separated list of positive integers.
    """
    try:
        values = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise ValueError(f"threads must be a comma-separated list of numbers like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"threads must be positive numbers like 1,2,4, got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x768"`` (height x width) -> ``(1024, 768)``.

    Raises:
        ValueError: not ``HxW`` with positive integers.
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"frame size must be HEIGHTxWIDTH like 1024x1024, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {text!r}")
    return height, width


@dataclass
class Candidate:
    """One model to benchmark."""

    label: str
    format: str
    kind: str  # "keras" or "tflite"
    path: Path
    run: Any = None  # RunInfo of the run it came from, if any
    tta: bool = False  # segmented with test-time flip averaging

    @property
    def size_kb(self) -> float:
        return round(self.path.stat().st_size / 1024, 1)


def discover(settings: BenchSettings) -> tuple[list[Candidate], list[Any]]:
    """The models named by ``settings.sources`` and the runs among them, in table order.

    A run directory contributes its Keras model (when ``settings.keras`` and the weights
    exist) and every .tflite in ``RUN/export``; a folder without a run config contributes
    its .tflite files; a file must be a marsedge .tflite.

    Raises:
        BenchError: a source is missing, holds no model, or a file is not a marsedge model.
    """
    from marsedge.train import rundir

    candidates: list[Candidate] = []
    runs = []
    for source in settings.sources:
        path = Path(source)
        if path.is_dir() and (path / rundir.CONFIG_FILE).exists():
            run = rundir.read_run(path, need_weights=False)
            runs.append(run)
            found = []
            if settings.keras and (path / rundir.BEST_WEIGHTS).exists():
                found.append(Candidate("keras", "keras", "keras", path / rundir.BEST_WEIGHTS, run))
            found += [_tflite(p, run) for p in sorted((path / EXPORT_DIR).glob("*.tflite"))]
            if not found:
                raise BenchError(f"{path}: no models (no {EXPORT_DIR}/*.tflite; run `marsedge export {path}` first)")
            candidates += found
        elif path.is_dir():
            files = sorted(path.glob("*.tflite"))
            if not files:
                raise BenchError(f"{path}: no .tflite files and not a run directory")
            candidates += [_tflite(p, None) for p in files]
        elif path.is_file():
            candidates.append(_tflite(path, None))
        else:
            raise BenchError(f"{path}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for candidate in candidates:
        key = candidate.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    unique.sort(key=lambda c: FORMAT_ORDER.index(c.format) if c.format in FORMAT_ORDER else len(FORMAT_ORDER))
    _disambiguate(unique, multiple_runs=len(runs) > 1)
    if settings.tta:
        unique = [
            twin
            for c in unique
            for twin in ([c, Candidate(f"{c.label} +TTA", c.format, c.kind, c.path, c.run, tta=True)]
                         if c.kind == "tflite" else [c])
        ]
    return unique, runs


def _tflite(path: Path, run: Any) -> Candidate:
    try:
        metadata = read_metadata(path)
    except ModelError as exc:
        raise BenchError(f"{path}: {exc}") from None
    precision = str(metadata.get("precision") or path.stem)
    return Candidate(precision, precision, "tflite", path, run)


def _disambiguate(candidates: list[Candidate], multiple_runs: bool) -> None:
    counts: dict[str, int] = {}
    for c in candidates:
        counts[c.label] = counts.get(c.label, 0) + 1
    for c in candidates:
        if counts[c.label] > 1 or multiple_runs:
            origin = c.run.path.name if c.run is not None and multiple_runs else c.path.stem
            c.label = f"{c.format} ({origin})"


def evaluation_tiles(settings: BenchSettings, runs: Sequence[Any]) -> tuple[TileSet, str]:
    """The labelled tiles every model is scored on, and a line saying where they come from.

    Raises:
        BenchError: neither a run nor ``--data`` names labelled tiles.
    """
    from marsedge.train import rundir

    if runs:
        run = runs[0]
        tiles = rundir.split_tiles(run, settings.run_split, settings.data)
        where = f"{settings.run_split} split of {run.path} ({settings.data or run.config.data})"
    elif settings.data and settings.split:
        raise UsageError(
            f"--split {settings.split} picks a split of a run, and no run directory was given: "
            f"name the run (marsedge bench RUN_DIR) or drop --split to score every tile of {settings.data}"
        )
    elif settings.data:
        tiles = load_tiles(settings.data)
        where = f"all tiles of {settings.data}"
    else:
        raise BenchError("no labelled tiles to score: give a run directory or --data FILE")
    if not len(tiles):
        raise BenchError(f"no tiles in the {where}")
    if 0 < settings.tiles < len(tiles):
        index = np.unique(np.linspace(0, len(tiles) - 1, settings.tiles).round().astype(np.int64))
        tiles = tiles.subset(index)
        where += f", {len(tiles)} evenly spaced"
    return tiles, where


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, min and percentiles of latency samples (ms)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std()), 4),
        "min": round(float(values.min()), 4),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "n": int(values.size),
    }


@dataclass
class SpeedRun:
    """Timings of one model at one thread count, raw samples kept for the log."""

    threads: int
    load_ms: float
    first_ms: float
    tile_ms: list[float]
    infer_ms: list[float]
    frame_ms: list[float]
    frame_tiles: int


def time_model(
    path: Path,
    threads: int,
    tile: np.ndarray,
    frame: np.ndarray | None,
    settings: BenchSettings,
    tta: bool = False,
) -> tuple[SpeedRun, Segmenter]:
    """Times one model through :class:`Segmenter` at one thread count; returns the segmenter too."""
    tick = time.perf_counter()
    segmenter = Segmenter(path, threads=threads, reference_kernels=settings.reference_kernels, tta=tta)
    load_ms = (time.perf_counter() - tick) * 1e3
    tile_ms, infer_ms = [], []
    with model_resolution(segmenter):
        tick = time.perf_counter()
        segmenter.segment(tile)
        first_ms = (time.perf_counter() - tick) * 1e3
        for _ in range(settings.warmup):
            segmenter.segment(tile)
        for _ in range(settings.runs):
            tick = time.perf_counter()
            result = segmenter.segment(tile)
            tile_ms.append((time.perf_counter() - tick) * 1e3)
            infer_ms.append(result.timings["infer"])
    frame_ms: list[float] = []
    frame_tiles = 0
    if frame is not None and settings.frame_runs:
        frame_tiles = segmenter.segment(frame).tiles  # untimed: first pass over the frame
        for _ in range(settings.frame_runs):
            tick = time.perf_counter()
            segmenter.segment(frame)
            frame_ms.append((time.perf_counter() - tick) * 1e3)
    return SpeedRun(threads, load_ms, first_ms, tile_ms, infer_ms, frame_ms, frame_tiles), segmenter


@contextlib.contextmanager
def model_resolution(segmenter: Segmenter) -> Iterator[Segmenter]:
    """Segments data-set tiles as they are: they are already at the model's resolution.

    The Segmenter resizes every whole frame to the model's ground resolution first
    (``model_pixels_per_frame`` over the frame's longer side); the labelled tiles were cut
    at model resolution (half-frames already reduced), so scoring and per-tile timing fix
    the resize at 1. Full frames keep the rule.
    """
    saved = segmenter.scale
    segmenter.scale = 1.0
    try:
        yield segmenter
    finally:
        segmenter.scale = saved


def describe_machine() -> dict[str, Any]:
    """What ran the benchmark: CPU, cores, memory, OS, Python and package versions, load."""
    from importlib import metadata

    from marsedge.edge_runtime.interpreter import interpreter_api

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    _, _, package = interpreter_api()
    cpu = cpu_model()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "interpreter": f"{package} {version(package.split('.')[0].replace('_', '-')) or ''}".strip(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def cpu_model() -> str:
    """The board (device tree) or CPU model name, for report headers."""
    for path in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
        try:
            board = Path(path).read_text(errors="replace").strip("\x00 \n")
            if board:
                return board
        except OSError:
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


@dataclass
class BenchResult:
    """The report (JSON-ready) and the raw samples behind it (for ``benchmarks.log``)."""

    report: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)


def run_bench(settings: BenchSettings, progress: Progress | None = None) -> BenchResult:
    """Measures every model named by ``settings``; see the module docstring.

    Raises:
        BenchError: no models or no labelled tiles.
        MarsEdgeError: a run directory or data file is broken.
        ModelError: a model cannot be loaded by the runtime.
    """
    started = datetime.now(timezone.utc)
    machine = describe_machine()  # before any work: the load average says what else ran
    candidates, runs = discover(settings)
    tiles, where = evaluation_tiles(settings, runs)
    tflites = [c for c in candidates if c.kind == "tflite"]
    keras_models = [c for c in candidates if c.kind == "keras"]
    steps = len(settings.threads) * (1 if settings.peak else 0) + len(keras_models)
    steps += sum(len(settings.threads) + 1 + (1 if settings.rss and not c.tta else 0) for c in tflites)
    done = 0

    def step(message: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, steps, message)
        done += 1

    peaks: dict[int, dict] = {}
    if settings.peak:
        from marsedge.benchmarks.peak import measure_peak

        for threads in settings.threads:
            step(f"machine peak, {threads} thread(s)")
            try:
                peaks[threads] = measure_peak(threads)
            except (RuntimeError, OSError, ValueError) as exc:
                logger.warning("%s; GMAC/s is reported without a peak", exc)

    frame = None
    if settings.frame_runs:
        frame = np.random.default_rng(0).integers(0, 256, settings.frame_size, dtype=np.uint8)
    records: dict[str, dict] = {}
    masks: dict[str, np.ndarray] = {}
    samples: list[dict[str, Any]] = []
    for candidate in tflites:
        record = _base_record(candidate)
        speed_runs = []
        for threads in settings.threads:
            step(f"{candidate.label}: speed at {threads} thread(s)")
            run, segmenter = time_model(candidate.path, threads, tiles.images[0], frame, settings, candidate.tta)
            speed_runs.append(run)
            samples.append(_sample_record(candidate.label, run))
        step(f"{candidate.label}: accuracy on {len(tiles)} tiles")
        with model_resolution(segmenter):
            masks[candidate.label] = np.stack([segmenter.segment(image).mask for image in tiles.images])
        del segmenter
        record["speed"] = [
            _speed_record(run, record["macs_per_tile"], peaks.get(run.threads), candidate.format) for run in speed_runs
        ]
        if settings.rss and not candidate.tta:  # the same interpreter: the same memory
            step(f"{candidate.label}: peak memory of a runtime process")
            record["rss"] = _rss(candidate.path, max(settings.threads), settings.frame_size, settings.reference_kernels)
        records[candidate.label] = record

    for candidate in keras_models:
        step(f"{candidate.label}: accuracy of the Keras float model")
        try:
            masks[candidate.label] = _keras_masks(candidate.run, tiles.images)
        except MarsEdgeError as exc:  # MissingExtraError: no TensorFlow on this machine
            logger.warning("skipping the Keras model: %s", exc)
            continue
        records[candidate.label] = _base_record(candidate)
    if progress is not None:
        progress(steps, steps, "done")

    ordered = [c for c in candidates if c.label in records]
    reference = _reference(ordered)
    float32 = next((c.label for c in ordered if c.format == "float32"), None)
    _score(records, masks, tiles.masks, reference, float32)

    report = {
        "schema": SCHEMA,
        "marsedge_version": __version__,
        "created": started.isoformat(timespec="seconds"),
        "command": settings.command(),
        "machine": machine,
        "peak": [peaks[t] for t in settings.threads if t in peaks],
        "settings": {
            "sources": list(settings.sources),
            "tiles_from": where,
            "tiles": len(tiles),
            "split": settings.run_split if runs else None,
            "threads": list(settings.threads),
            "runs": settings.runs,
            "warmup": settings.warmup,
            "frame_size": list(settings.frame_size),
            "frame_runs": settings.frame_runs,
            "tile_size": list(tiles.images.shape[1:]),
            "kernels": "builtin reference" if settings.reference_kernels else "XNNPACK (default)",
        },
        "reference": reference,
        "float32": float32,
        "scored_classes": [CLASS_NAMES[c] for c in SCORED_CLASSES],
        "models": [records[c.label] for c in ordered],
    }
    if settings.frame_runs:  # whole frames of 256, 1024, 2048 px: the resize is part of the cost
        from marsedge.benchmarks.frames import frame_costs

        report["frames"] = frame_costs(
            [c.path for c in tflites if not c.tta], threads=max(settings.threads), runs=settings.frame_runs,
            rss=settings.rss, reference_kernels=settings.reference_kernels,
        )  # fmt: skip
    return BenchResult(report, samples)


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), digits)


def _base_record(candidate: Candidate) -> dict[str, Any]:
    macs = None
    if candidate.kind == "tflite":
        from marsedge.benchmarks.ops import ProfileError, model_macs

        try:
            macs = model_macs(candidate.path) or None
        except ProfileError as exc:
            logger.warning("%s: MACs not counted from the graph: %s", candidate.path, exc)
    if macs is None and candidate.run is not None:
        macs = candidate.run.metrics().get("macs_per_tile")
    return {
        "label": candidate.label,
        "format": candidate.format,
        "kind": candidate.kind,
        "path": str(candidate.path),
        "size_kb": candidate.size_kb,
        "macs_per_tile": macs,
        "tta": candidate.tta,
        "speed": None,
        "rss": None,
    }


def _speed_record(run: SpeedRun, macs: int | None, peak: dict | None, fmt: str) -> dict[str, Any]:
    tile = latency_stats(run.tile_ms)
    infer = latency_stats(run.infer_ms)
    frame = latency_stats(run.frame_ms) if run.frame_ms else None
    gmacs = round(macs / infer["p50"] / 1e6, 2) if macs and infer["p50"] > 0 else None
    peak_gmacs = None
    if peak:
        peak_gmacs = peak["int8_gmacs_estimate"] if fmt in INT8_FORMATS else peak["float32_gmacs"]
    return {
        "threads": run.threads,
        "load_ms": round(run.load_ms, 3),
        "first_ms": round(run.first_ms, 3),
        "tile_ms": tile,
        "infer_ms": infer,
        "frame_ms": frame,
        "frame_tiles": run.frame_tiles or None,
        "fps": round(1000.0 / frame["mean"], 3) if frame else None,
        "tiles_per_s": round(1000.0 / tile["mean"], 1),
        "gmacs": gmacs,
        "peak_gmacs": peak_gmacs,
        "peak_fraction": round(gmacs / peak_gmacs, 4) if gmacs and peak_gmacs else None,
        "speedup_vs_float32": None,
    }


def _sample_record(label: str, run: SpeedRun) -> dict[str, Any]:
    return {
        "model": label,
        "threads": run.threads,
        "load_ms": round(run.load_ms, 3),
        "first_ms": round(run.first_ms, 3),
        "tile_ms": [round(v, 4) for v in run.tile_ms],
        "infer_ms": [round(v, 4) for v in run.infer_ms],
        "frame_ms": [round(v, 3) for v in run.frame_ms],
    }


def _speed_at(record: dict | None, threads: int) -> float | None:
    for speed in (record or {}).get("speed") or []:
        if speed["threads"] == threads:
            return speed["tile_ms"]["p50"]
    return None


def _rss(path: Path, threads: int, frame_size: tuple[int, int], reference_kernels: bool) -> dict | None:
    from marsedge.benchmarks.rss import measure_rss

    try:
        return measure_rss(str(path), threads, frame_size, reference_kernels)
    except (RuntimeError, OSError, ValueError) as exc:
        logger.warning("%s", exc)
        return None


def _reference(candidates: Sequence[Candidate]) -> str | None:
    """The float model others are compared with: Keras if scored, else the float32 export."""
    for fmt in ("keras", "float32"):
        for candidate in candidates:
            if candidate.format == fmt:
                return candidate.label
    return None


def _score(
    records: dict[str, dict],
    masks: dict[str, np.ndarray],
    truth: np.ndarray,
    reference: str | None,
    float32: str | None,
) -> None:
    """Adds accuracy (IoU, agreement and drop against ``reference``) and speed-up against
    ``float32`` to every record."""
    for label, record in records.items():
        report = iou_report(confusion_matrix(truth, masks[label]), CLASS_NAMES)
        record["accuracy"] = {
            "tiles": len(truth),
            "mean_iou": _round(report["mean_iou"]),
            "class_iou": {name: _round(value) for name, value in report["class_iou"].items()},
            "pixel_agreement": _round(pixel_agreement(masks[label], masks[reference])) if reference else None,
        }
    reference_miou = records[reference]["accuracy"]["mean_iou"] if reference else None
    for record in records.values():
        miou = record["accuracy"]["mean_iou"]
        known = reference_miou is not None and miou is not None
        record["accuracy"]["iou_drop"] = _round(reference_miou - miou) if known else None
        for speed in record.get("speed") or []:
            base = _speed_at(records.get(float32), speed["threads"]) if float32 else None
            speed["speedup_vs_float32"] = round(base / speed["tile_ms"]["p50"], 3) if base else None


def _keras_masks(run: Any, images: np.ndarray) -> np.ndarray:
    from marsedge.train.rundir import load_model
    from marsedge.train.trainer import predict_classes

    model = load_model(run)
    return predict_classes(model, images, run.output_classes)


def check_results(
    report: dict[str, Any], min_miou: float | None = None, max_iou_drop: float | None = None
) -> list[str]:
    """One line per model that falls short of ``min_miou`` or exceeds ``max_iou_drop``.

    Raises:
        BenchError: ``max_iou_drop`` is given but there is no float reference to drop from.
    """
    if max_iou_drop is not None and not report.get("reference"):
        raise UsageError("--max-iou-drop needs a float reference: the run's Keras model or a float32 export")
    failures = []
    for model in report["models"]:
        accuracy = model["accuracy"]
        miou, drop = accuracy["mean_iou"], accuracy["iou_drop"]
        if min_miou is not None and (miou is None or miou < min_miou):
            failures.append(f"{model['label']}: mIoU {_fmt(miou)} is below --min-miou {min_miou:g}")
        if max_iou_drop is not None and (drop is None or drop > max_iou_drop):
            failures.append(
                f"{model['label']}: mIoU {_fmt(miou)} is {_fmt(drop)} below {report['reference']}, "
                f"more than --max-iou-drop {max_iou_drop:g}"
            )
    return failures


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

"""``export_run``: a trained run directory -> .tflite files with metadata, export.json, a table."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marsedge import __version__
from marsedge.core.atomic import write_bytes, write_json
from marsedge.core.calibration import calibrate_tiles
from marsedge.core.metadata import build_metadata, embed_metadata, split_recipe
from marsedge.core.metrics import pixel_agreement, score
from marsedge.edge_runtime.errors import ModelError
from marsedge.edge_runtime.tile_model import TileModel
from marsedge.errors import MarsEdgeError
from marsedge.export.convert import FORMATS, INT8_FORMATS, PRECISIONS, ExportError, describe, to_tflite
from marsedge.train import rundir

log = logging.getLogger(__name__)

SUMMARY_FILE = "export.json"
QAT_WEIGHTS = "marsedge_qat.weights.h5"
TABLE_CLASSES = ("soil", "bedrock", "sand", "big_rock")


class AccuracyGateError(MarsEdgeError):
    """QAT int8 lost more validation mean IoU than allowed; the files are written anyway."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class ExportOptions:
    """How ``marsedge export`` runs; the CLI maps onto it one to one.

    Attributes:
        formats: any of float32, float16, dynamic, ptq, qat.
        out: output folder; ``RUN_DIR/export`` when None.
        data: the run's data file when it moved; the path in the run's config when None.
        qat_epochs: QAT fine-tuning passes over (a fraction of) the training split.
        qat_lr: peak QAT learning rate (cosine-decayed); below the run's final rate.
        qat_fraction: share of each QAT epoch's batches used, for quick exports.
        calib_tiles: training tiles for int8 calibration (PTQ ranges, QAT starting
            ranges, and any tensor QAT left without a range).
        gate: fail when QAT int8 loses more than ``max_iou_drop`` val mean IoU vs float.
        max_iou_drop: allowed drop of mean IoU, as a fraction (0.01 = 1 point).
        threads: interpreter threads for evaluating the .tflite files.
        seed: picks the calibration tiles.
        batch_size: QAT tiles per batch; the run's own when None.
    """

    formats: tuple[str, ...] = FORMATS
    out: str | None = None
    data: str | None = None
    qat_epochs: int = 1
    qat_lr: float = 1e-6
    qat_fraction: float = 1.0
    calib_tiles: int = 256
    gate: bool = True
    max_iou_drop: float = 0.01
    threads: int | None = None
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ExportError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
        if self.qat_epochs < 0:
            raise ExportError(f"qat_epochs must be 0 or more, got {self.qat_epochs}")
        if not 0 < self.qat_fraction <= 1:
            raise ExportError(f"qat_fraction must be in (0, 1], got {self.qat_fraction}")
        if not self.qat_lr > 0:
            raise ExportError(f"qat_lr must be positive, got {self.qat_lr}")
        if self.calib_tiles < 1:
            raise ExportError(f"calib_tiles must be at least 1, got {self.calib_tiles}")
        if not 0 <= self.max_iou_drop < 1:
            raise ExportError(f"max_iou_drop must be in [0, 1), got {self.max_iou_drop}")


def _compact(report: dict | None) -> dict | None:
    if not report:
        return None
    return {"mean_iou": report.get("mean_iou"), "class_iou": report.get("class_iou")}


def model_metadata(
    run,
    fmt: str,
    info: dict,
    val: dict,
    created: str,
    normalization: tuple[float, float] | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``marsedge.json`` document embedded in an exported .tflite (DEVELOPERS.md keys;
    written by :func:`marsedge.core.metadata.build_metadata`).

    ``calibration``: the softmax temperature fitted on val for this file
    (:func:`marsedge.core.calibration.calibrate_tiles`), which the runtime's confidence uses.

    ``normalization``: the ``(mean, std)`` the runtime applies when the graph takes
    normalised levels; None when the graph normalises (``in_model: true``). The field of
    view (``model_pixels_per_frame``) is the run's ``frame_pixels``.
    """
    height, width = run.input_shape
    source = run.metrics()
    if normalization is None:
        norm = {"mean": float(run.derived["mean"]), "std": float(run.derived["std"]), "in_model": True}
    else:
        norm = {"mean": float(normalization[0]), "std": float(normalization[1]), "in_model": False}
    return build_metadata(
        name=f"{run.path.name}-{PRECISIONS[fmt]}",
        model_name=run.path.name,  # the user's name for the model: its run directory's
        precision=PRECISIONS[fmt],
        height=height,
        width=width,
        normalization=norm,
        output_classes=run.output_classes,
        model_pixels_per_frame=run.config.frame_pixels,
        marsedge_version=__version__,
        quantization={"input": info["input"], "output": info["output"]},
        metrics={
            "source_val": _compact(source.get("val")),
            "source_test": _compact(source.get("test")),
            "best_epoch": source.get("best_epoch"),
            "export_val": {**_compact(val), "agreement_with_float": val.get("agreement")},
        },
        source_run=str(run.path.resolve()),
        # lets `marsedge train --teacher FILE` prove the file never saw a student's val/test tiles
        source_split=rundir.split_fingerprint(rundir.split_indices(run), run.data_sha256),
        # lets `marsedge eval MODEL --split test` recompute the test split from the data alone
        **(
            {
                "split": split_recipe(
                    run.config.to_dict(), run.config.data, run.data_sha256, run.derived.get("split_sizes")
                )
            }
            if run.data_sha256
            else {}
        ),
        **({"calibration": calibration} if calibration is not None else {}),
        created=created,
    )


def _calibration_tiles(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    if count >= len(images):
        return images
    chosen = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    return images[np.sort(chosen)]


def export_run(run_dir: str | Path, options: ExportOptions = ExportOptions()) -> dict[str, Any]:
    """Export a trained run to TFLite in each requested format and measure each on val.

    Writes ``marsedge_<format>.tflite`` (metadata embedded), the QAT weights and
    ``export.json`` to ``options.out``. Returns the summary written to export.json.

    Raises:
        RunDirError: the run directory is missing or incomplete.
        QuantizationError: a layer cannot be quantised (named in the message).
        ExportError: conversion failed or an int8 model kept float tensors.
        AccuracyGateError: QAT int8 lost more than ``max_iou_drop`` mean IoU (after writing).
    """
    run = rundir.read_run(run_dir)
    out = Path(options.out) if options.out else run.path / "export"
    started = time.perf_counter()
    train = rundir.split_tiles(run, "train", options.data)
    val = rundir.split_tiles(run, "val", options.data)
    if len(train) == 0 or len(val) == 0:
        raise ExportError(f"{run.path}: empty train or val split")
    calibration = _calibration_tiles(train.images, options.calib_tiles, options.seed)
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    log.info("run %s: %d train / %d val tiles, formats %s", run.path, len(train), len(val), ", ".join(options.formats))

    from marsedge.train.predict import KerasTileModel

    model = rundir.load_model(run)
    float_keras = KerasTileModel(model, run.output_classes, run.input_shape)
    reference = float_keras.predict_masks(val.images)
    summary: dict[str, Any] = {
        "marsedge_version": __version__,
        "source_run": str(run.path.resolve()),
        "created": created,
        "val_tiles": len(val),
        "calibration_tiles": len(calibration),
        "options": {**asdict(options), "formats": list(options.formats)},
        "keras": {"precision": "float32 (Keras)", "val": score(val.masks, reference, reference)},
        "formats": {},
    }
    out.mkdir(parents=True, exist_ok=True)

    from marsedge.export.fold import fold_for_int8, split_input_normalization

    # Every format converts the graph the int8 model runs (BN folded, non-overlapping
    # Conv2DTranspose as 1x1 conv + depth-to-space), so float and int8 files compare op for op.
    # The input normalisation leaves the graph for the runtime's input table: in int8 it
    # rounded the grey levels twice (split_input_normalization).
    folded, folded_normalization = split_input_normalization(fold_for_int8(model))
    qat_masks = None
    for fmt in options.formats:
        tick = time.perf_counter()
        graph, normalization = folded, folded_normalization
        if fmt == "qat":
            qat_model, qat_masks = _quantization_aware(
                run, model, train, calibration, options, out, summary, val, reference
            )
            graph, normalization = split_input_normalization(qat_model)
        content = to_tflite(graph, fmt, run.input_shape, calibration if fmt in INT8_FORMATS else None, normalization)
        convert_seconds = time.perf_counter() - tick
        info = describe(content)
        try:
            tflite = TileModel(
                content, output_classes=run.output_classes, threads=options.threads, normalization=normalization
            )
        except ModelError as exc:
            raise ExportError(f"{fmt}: the converted model does not run: {exc}") from None
        # one pass over val: the masks scored below, and the softmax temperature of this file
        masks, fitted = calibrate_tiles(tflite.float_logits, run.output_classes, val.images, val.masks)
        report = score(val.masks, masks, reference)
        metadata = model_metadata(run, fmt, info, report, created, normalization, fitted)
        path = out / f"marsedge_{fmt}.tflite"
        data = embed_metadata(content, metadata)
        write_bytes(path, data)
        summary["formats"][fmt] = {
            "file": path.name,
            "precision": PRECISIONS[fmt],
            "size_bytes": len(data),
            "val": report,
            "input": info["input"],
            "output": info["output"],
            "ops": info["ops"],
            "float_ops": info["float_ops"],
            "not_delegated": info["not_delegated"],
            "seconds": round(time.perf_counter() - tick, 1),
            "convert_seconds": round(convert_seconds, 1),
            "calibration": fitted,
        }
        if fmt == "qat":
            # how faithfully the .tflite runs the fake-quantised graph it came from
            summary["formats"][fmt]["agreement_with_qat_keras"] = pixel_agreement(masks, qat_masks)
        log.info(
            "%s: %s, %.0f KB, val mIoU %.4f, agreement %.4f, temperature %.3g (val ECE %.4f -> %.4f) (%.0f s)",
            fmt,
            path,
            len(data) / 1024,
            report["mean_iou"],
            report["agreement"],
            fitted["temperature"],
            fitted["ece_before"],
            fitted["ece_after"],
            time.perf_counter() - tick,
        )
    summary["gate"] = accuracy_gate(summary, options)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / SUMMARY_FILE, summary)
    if summary["gate"]["checked"] and not summary["gate"]["passed"]:
        raise AccuracyGateError(summary["gate"]["message"], summary)
    return summary


def _quantization_aware(run, model, train, calibration, options, out, summary, val, reference):
    """Build, calibrate, fine-tune and save the QAT model; record what it did in ``summary``.

    Returns the QAT Keras model and its val masks.
    """
    from marsedge.export.qat import build_qat_model, calibrate_ranges, fine_tune
    from marsedge.train.predict import KerasTileModel

    tick = time.perf_counter()
    qat_model = build_qat_model(model)
    calibrate_ranges(qat_model, model, calibration)

    def validate(candidate) -> float:
        masks = KerasTileModel(candidate, run.output_classes, run.input_shape).predict_masks(val.images)
        return score(val.masks, masks)["mean_iou"]

    result = fine_tune(
        qat_model,
        run,
        train.images,
        train.masks,
        options.qat_epochs,
        options.qat_lr,
        options.qat_fraction,
        options.batch_size,
        calibration=calibration,
        validate=validate,
    )
    qat_model.save_weights(str(out / QAT_WEIGHTS))
    qat_masks = KerasTileModel(qat_model, run.output_classes, run.input_shape).predict_masks(val.images)
    summary["qat"] = {
        "weights": QAT_WEIGHTS,
        "epochs": result.epochs,
        "steps_per_epoch": result.steps_per_epoch,
        "losses": result.losses,
        "val_miou_per_epoch": result.val_miou,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        "seconds": round(time.perf_counter() - tick, 1),
        "keras_val": score(val.masks, qat_masks, reference),
    }
    return qat_model, qat_masks


def change_words(change: float) -> str:
    """A change of mean IoU (a fraction; positive = better) in points, worded by its sign:
    "gain 0.35 points", "drop 1.50 points", "no change"."""
    points = round(change * 100, 2)
    if points > 0:
        return f"gain {points:.2f} points"
    if points < 0:
        return f"drop {-points:.2f} points"
    return "no change"


def accuracy_gate(summary: dict, options: ExportOptions) -> dict[str, Any]:
    """Compare QAT int8 val mean IoU with float Keras; ``passed`` is None when not checked."""
    if "qat" not in summary["formats"]:
        return {"checked": False, "passed": None, "message": "no QAT int8 model exported"}
    float_miou = summary["keras"]["val"]["mean_iou"]
    qat = summary["formats"]["qat"]
    drop = float_miou - qat["val"]["mean_iou"]
    passed = drop <= options.max_iou_drop
    message = (
        f"QAT int8 val mean IoU {qat['val']['mean_iou']:.4f} vs float {float_miou:.4f}: "
        f"{change_words(-drop)}, allowed drop {options.max_iou_drop * 100:.2f}"
    )
    if not passed:
        message = (
            f"accuracy gate failed: {message}; files are in place — try more --qat-epochs or a lower --qat-lr, "
            "or pass --no-gate to accept"
        )
    return {
        "checked": options.gate,
        "passed": passed if options.gate else None,
        "drop": drop,
        "max_iou_drop": options.max_iou_drop,
        "message": message,
    }


def format_table(summary: dict[str, Any]) -> str:
    """The export table: format | size KB | val mIoU | per-class IoU | agreement with float."""
    header = ["format", "size KB", "val mIoU", *TABLE_CLASSES, "agreement"]
    rows = [_row("keras float32", None, summary["keras"]["val"])]
    for fmt, entry in summary["formats"].items():
        rows.append(_row(fmt, entry["size_bytes"], entry["val"]))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(name: str, size: int | None, report: dict) -> list[str]:
    iou = report["class_iou"]
    cells = [f"{iou[c]:.4f}" if iou.get(c) is not None else "-" for c in TABLE_CLASSES]
    return [
        name,
        "-" if size is None else f"{size / 1024:.1f}",
        f"{report['mean_iou']:.4f}",
        *cells,
        f"{report.get('agreement', float('nan')):.4f}",
    ]

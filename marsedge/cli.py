"""The ``marsedge`` command: a thin Typer layer that parses options and calls library code.

Exit codes (the same in ``marsedge-run``): 0 done; 1 a data, model, run-directory or I/O
problem, or a failed check; 2 a usage error; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from marsedge import __version__, datapaths
from marsedge.edge_runtime.cli import BIT_DEPTH_HELP, IGNORE_MASK_HELP, MIN_CONFIDENCE_HELP, NO_ROUTE_HELP, BitDepth
from marsedge.edge_runtime.cliutil import OneLineErrorsGroup
from marsedge.edge_runtime.segmenter import BUNDLED_MODELS
from marsedge.errors import MarsEdgeError, UsageError
from marsedge.export.convert import FORMATS
from marsedge.train.config import AUGMENTATIONS, EMA_SELECTIONS, LOSSES, STRATEGIES, TrainConfig

app = typer.Typer(
    name="marsedge",
    help="Train, quantise, export, evaluate and benchmark compact Mars terrain segmenters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrorsGroup,
)

_DATA_DEFAULT = datapaths.DEFAULT_HELP
_NO_DATA = datapaths.MISSING
_TRAIN = TrainConfig()  # the defaults --help shows; a --config file's values win over them


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """An Enum of a fixed tuple of option values, so the parser checks them."""
    return Enum(name, {value: value for value in values}, type=str)


Loss = _choices("Loss", LOSSES)
Augment = _choices("Augment", AUGMENTATIONS)
Strategy = _choices("Strategy", STRATEGIES)
EmaSelect = _choices("EmaSelect", EMA_SELECTIONS)
EvalSplit = _choices("EvalSplit", ("all", "train", "val", "test"))
BenchSplit = _choices("BenchSplit", ("val", "test", "train", "all"))


def _parse_formats(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """``--formats float32,qat`` -> ``("float32", "qat")``; the parser refuses other names."""
    if isinstance(value, tuple):
        return value
    names = [part.strip() for part in str(value).split(",") if part.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise typer.BadParameter(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return tuple(name for name in FORMATS if name in names)


_QUIET_LOGGERS = ("tensorflow", "absl", "matplotlib", "h5py", "PIL")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (a handler bound to
    the stream of its first call would write to a closed one when the CLI runs in-process
    again, as under a test runner)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    """marsedge's own log at INFO (DEBUG with --verbose); other libraries' log lines and
    TensorFlow's native messages only with --verbose (see :mod:`marsedge.train.tf_env`)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(message)s",
        datefmt="%H:%M:%S",
        handlers=[_StderrHandler()],
        force=True,
    )
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    os.environ["MARSEDGE_VERBOSE"] = "1" if verbose else "0"


def _given_options(ctx: typer.Context) -> set[str]:
    """The options typed on the command line (or set through the environment), not defaults."""
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"}


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def _fail_with(exc: MarsEdgeError) -> NoReturn:
    """A library error as one line: exit 2 for a usage error, 1 for bad data, models or runs."""
    _fail(str(exc), 2 if isinstance(exc, UsageError) else 1)


def _fail_io(exc: OSError, fallback: str | os.PathLike[str]) -> NoReturn:
    """An OSError (disk full, permission denied, missing file) as one line: path and reason, exit 1."""
    where = exc.filename if exc.filename is not None else fallback
    _fail(f"{where}: {exc.strerror or exc}", 1)


@contextlib.contextmanager
def _one_line_errors(path: str | os.PathLike[str], interrupted: str = "interrupted") -> Iterator[None]:
    """A command's failures as one ``error:`` line: library errors (:func:`_fail_with`),
    OSError with ``path`` when it names none (:func:`_fail_io`), Ctrl-C (exit 130)."""
    try:
        yield
    except MarsEdgeError as exc:
        _fail_with(exc)
    except OSError as exc:
        _fail_io(exc, path)
    except KeyboardInterrupt:
        _fail(interrupted, 130)


def default_data_path(models: Sequence[Path] = ()) -> Path | None:
    """The data a command reads without ``--data`` (:func:`marsedge.datapaths.model_data`)."""
    return datapaths.model_data(models)


# Help panels: the options most runs need stay in "Options"; the rest are grouped.
_MODEL = "Model, loss and augmentation"
_DISTILL = "Distillation, fine-tuning and weight averaging"
_HARDWARE = "Hardware"
_TIMING = "Timing and memory"
_CHECKS = "Checks (exit 1 when one fails)"
_REPORTS = "Reports"
_QAT = "Quantization-aware training"
_BATCH_MODEL = "Model and resize (as marsedge-run)"
_BATCH_ARCHIVES = "PDS products and ROS bags (as marsedge-run)"
_GATE = "Accuracy gate"
_VERBOSE_HELP = "Debug log, and the messages of TensorFlow and other libraries."


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[
        Optional[Path],
        typer.Option(help="AN2DL .npz or folder of image/mask PNG pairs.", show_default=datapaths.TILES_HELP),
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory to create (or resume).")] = Path("runs/exp"),
    config: Annotated[
        Optional[Path],
        typer.Option(
            help="JSON config file (keys of TrainConfig; template: configs/template.json); options given here override it."
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Maximum epochs (with --resume: the run's own budget unless given).")
    ] = _TRAIN.epochs,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per batch.")] = _TRAIN.batch_size,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate.")] = _TRAIN.learning_rate,
    seed: Annotated[int, typer.Option(help="Seed for split, shuffling, augmentation, weights.")] = _TRAIN.seed,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    limit: Annotated[
        Optional[int],
        typer.Option(
            min=4, help="Use about N tiles, whole frames drawn at random with --seed (quick runs).", show_default="all"
        ),
    ] = None,
    patience: Annotated[int, typer.Option(min=1, help="Early-stopping patience (epochs).")] = _TRAIN.patience,
    loss: Annotated[Loss, typer.Option(metavar="NAME", help=f"{', '.join(LOSSES)}.", rich_help_panel=_MODEL)] = Loss[
        _TRAIN.loss
    ],
    augment: Annotated[
        Augment,
        typer.Option(
            metavar="NAME",
            help="none; flips (left-right mirror); mild (adds zoom-in up to 1.2x and small shifts); camera (adds gain, gamma, slight blur, JPEG and sensor noise); robust; strong (adds up-down flips, rotation, zoom, brightness).",
            rich_help_panel=_MODEL,
        ),
    ] = Augment[_TRAIN.augment],
    base_filters: Annotated[
        int, typer.Option(min=4, max=256, help="Width of the first U-Net level.", rich_help_panel=_MODEL)
    ] = _TRAIN.model.base_filters,
    keep_unlabeled: Annotated[
        bool,
        typer.Option(
            "--keep-unlabeled",
            help="Score and predict class 0 (unlabeled) too; by default unlabeled pixels are ignored.",
            rich_help_panel=_MODEL,
        ),
    ] = False,
    init_from: Annotated[
        Optional[Path],
        typer.Option(
            metavar="RUN",
            help="Start from the best weights of this run directory, or a float32 .tflite export (fine-tuning: fresh optimizer and schedule; same model shape and split required).",
            rich_help_panel=_DISTILL,
        ),
    ] = None,
    teacher: Annotated[
        Optional[list[Path]],
        typer.Option(
            metavar="RUN",
            help="Distil from this run directory's best weights, or from a .tflite it exported (repeat for an ensemble; same data and split required).",
            rich_help_panel=_DISTILL,
        ),
    ] = None,
    distill_weight: Annotated[
        float, typer.Option(help="Weight of the distillation term (with --teacher).", rich_help_panel=_DISTILL)
    ] = _TRAIN.distill_weight,
    distill_class_weighted: Annotated[
        bool,
        typer.Option(
            "--distill-class-weighted",
            help="Weight each pixel's distillation term by the class weight the teachers expect there (rare classes count more).",
            rich_help_panel=_DISTILL,
        ),
    ] = False,
    ema_decay: Annotated[
        float,
        typer.Option(
            help="Validate and keep an exponential moving average of the weights with this decay per step (e.g. 0.999); 0 turns it off.",
            rich_help_panel=_DISTILL,
        ),
    ] = _TRAIN.ema_decay,
    ema_select: Annotated[
        EmaSelect,
        typer.Option(
            metavar="NAME",
            help="With --ema-decay: average (validate and keep the averaged weights) or either (each epoch, whichever of the averaged and raw weights scores higher on val).",
            rich_help_panel=_DISTILL,
        ),
    ] = EmaSelect[_TRAIN.ema_select],
    mixed_precision: Annotated[
        bool, typer.Option("--mixed-precision", help="float16 compute (GPU).", rich_help_panel=_HARDWARE)
    ] = False,
    strategy: Annotated[
        Strategy,
        typer.Option(
            metavar="NAME", help="default, or mirrored (several GPUs on one machine).", rich_help_panel=_HARDWARE
        ),
    ] = Strategy[_TRAIN.strategy],
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train on N Ray Train workers (MultiWorkerMirroredStrategy; the cluster extra): global batch = --batch-size x N, peak learning rate x sqrt(N) unless --learning-rate is given (then used as is). 1: this process, no Ray.",
            rich_help_panel=_HARDWARE,
        ),
    ] = 1,
    address: Annotated[
        Optional[str],
        typer.Option(
            help="Ray instance for --workers: local, auto, HOST:PORT or ray://HOST:10001.",
            show_default="$RAY_ADDRESS, else local",
            rich_help_panel=_HARDWARE,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Train a compact U-Net on Mars terrain tiles and write a run directory."""
    _setup_logging(verbose)
    given = _given_options(ctx)
    with _one_line_errors(out, f"interrupted; continue with: marsedge train --out {out} --resume"):
        from marsedge.train.config import TrainConfig

        base = TrainConfig.load(config) if config else TrainConfig()
        run_epochs = epochs if "epochs" in given else None
        if resume and run_epochs is None and config is None:
            # a bare --resume keeps the run's own budget; only --epochs (or a --config) changes it
            from marsedge.train import rundir

            if (out / rundir.STATE_FILE).is_file():  # else the trainer says there is nothing to resume
                run_epochs = rundir.read_run(out, need_weights=False).config.epochs
        if data is None and not resume:
            data = Path(base.data) if base.data else default_data_path()
            if data is None:
                _fail(_NO_DATA, 1)
        options = dict(
            batch_size=batch_size,
            seed=seed,
            learning_rate=learning_rate,
            loss=loss.value,
            augment=augment.value,
            limit=limit,
            patience=patience,
            strategy=strategy.value,
            distill_weight=distill_weight,
            ema_decay=ema_decay,
            ema_select=ema_select.value,
        )
        changes = {name: value for name, value in options.items() if name in given}  # the rest: config's
        changes.update(out=str(out), epochs=run_epochs)
        if data:
            changes["data"] = str(data)
        if init_from:
            changes["init_from"] = str(init_from)
        if teacher:
            changes["teachers"] = tuple(str(t) for t in teacher)
        if distill_class_weighted:
            changes["distill_class_weighted"] = True
        if mixed_precision:
            changes["mixed_precision"] = True
        if keep_unlabeled:
            changes["ignore_background"] = False
        if "base_filters" in given:
            changes["model"] = {"base_filters": base_filters}
        try:
            settings = base.replace(**{k: v for k, v in changes.items() if v is not None})
        except MarsEdgeError as exc:  # an option value (or combination) the config refuses
            raise UsageError(str(exc)) from None
        if workers > 1 or address is not None:
            from marsedge.cluster.train import train_on_ray

            metrics = train_on_ray(settings, workers, address, resume, learning_rate_given="learning_rate" in given)
        else:
            from marsedge.train.trainer import train as run_training

            metrics = run_training(settings, resume=resume)
    mix = metrics.get("mix")
    chosen = (
        f"mixed: {mix['alpha']:g} x its last epoch + {1 - mix['alpha']:g} x {mix['partner']}"
        if mix
        else f"best epoch {metrics['best_epoch']}"
    )
    typer.echo(f"val mIoU {metrics['val']['mean_iou']:.4f} ({chosen}); run directory: {out}")


@app.command()
def bench(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN_DIR_OR_MODEL...",
            help="Run directories (Keras model + RUN/export/*.tflite), export folders or .tflite files.",
        ),
    ],
    data: Annotated[
        Optional[Path],
        typer.Option(
            help="Labelled tiles to score (AN2DL .npz or PNG folder); with a run it replaces the run's data file, same split.",
            show_default=_DATA_DEFAULT,
        ),
    ] = None,
    split: Annotated[
        Optional[BenchSplit],
        typer.Option(
            metavar="NAME",
            help="The split to score: val, test, train or all. .tflite files that carry their split recipe (the bundled ones do) are scored on their own split of their training data; other files on every tile. Scores on tiles the models trained on are labelled.",
            show_default="a run's val; a .tflite's test",
        ),
    ] = None,
    tiles: Annotated[
        int, typer.Option(min=0, help="Score at most N tiles, evenly spaced over the split; 0 = all.")
    ] = 0,
    threads: Annotated[str, typer.Option(help="Interpreter thread counts to time, comma-separated.")] = "1,2",
    runs: Annotated[
        int,
        typer.Option(
            min=1,
            rich_help_panel=_TIMING,
            help="Timed single-tile inferences per model and thread count (ops timed per op with --profile-ops).",
        ),
    ] = 50,
    warmup: Annotated[
        int, typer.Option(min=0, rich_help_panel=_TIMING, help="Untimed inferences before the timed ones.")
    ] = 5,
    frame_size: Annotated[
        str, typer.Option(rich_help_panel=_TIMING, help="Full frame HEIGHTxWIDTH timed through the runtime's tiling.")
    ] = "1024x1024",
    frame_runs: Annotated[
        int,
        typer.Option(
            min=0, rich_help_panel=_TIMING, help="Timed full frames per model and thread count; 0 skips frames."
        ),
    ] = 3,
    out: Annotated[
        Path,
        typer.Option(help="Directory for benchmarks.md, .json, .png and .log (ops.md, ops.json with --profile-ops)."),
    ] = Path("benchmarks"),
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the JSON report on stdout instead of the table.")
    ] = False,
    min_miou: Annotated[
        Optional[float], typer.Option(rich_help_panel=_CHECKS, help="Check: exit 1 when a model's mIoU is below this.")
    ] = None,
    max_iou_drop: Annotated[
        Optional[float],
        typer.Option(
            rich_help_panel=_CHECKS,
            help="Check: exit 1 when a model's mIoU is more than this below the float reference.",
        ),
    ] = None,
    no_keras: Annotated[
        bool,
        typer.Option(
            "--no-keras",
            rich_help_panel=_TIMING,
            help="Leave out the run's Keras float model (scored by default; needs TensorFlow: the train extra).",
        ),
    ] = False,
    no_rss: Annotated[
        bool,
        typer.Option(
            "--no-rss",
            rich_help_panel=_TIMING,
            help="Skip the peak memory of a separate runtime process per model.",
        ),
    ] = False,
    no_peak: Annotated[
        bool,
        typer.Option(
            "--no-peak",
            rich_help_panel=_TIMING,
            help="Skip the machine's float32 GEMM peak per thread count.",
        ),
    ] = False,
    reference_kernels: Annotated[
        bool,
        typer.Option(
            "--reference-kernels",
            rich_help_panel=_TIMING,
            help="Builtin reference kernels instead of XNNPACK: slow; for correctness checks under qemu.",
        ),
    ] = False,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            rich_help_panel=_TIMING,
            help="Also measure every .tflite with test-time flip averaging (marsedge-run --tta), as rows of their own.",
        ),
    ] = False,
    corruption_frames: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            rich_help_panel=_REPORTS,
            help="Also run the corruption benchmark (eval --corruptions) on N whole test frames; 0 skips it.",
        ),
    ] = 0,
    frames_data: Annotated[
        Optional[Path],
        typer.Option(
            rich_help_panel=_REPORTS,
            help="Labelled whole frames (AI4Mars layout) for --corruption-frames.",
            show_default="the shared AI4Mars folder",
        ),
    ] = None,
    write_doc: Annotated[
        Optional[Path],
        typer.Option(
            rich_help_panel=_REPORTS, help="Also replace the generated section of this Markdown file (BENCHMARKS.md)."
        ),
    ] = None,
    doc_note: Annotated[
        Optional[str],
        typer.Option(
            rich_help_panel=_REPORTS,
            help="A note shown at the top of the --write-doc section (e.g. that it is a placeholder).",
        ),
    ] = None,
    profile_ops: Annotated[
        bool,
        typer.Option(
            "--profile-ops",
            rich_help_panel=_REPORTS,
            help="Instead of the benchmark: time every op of each .tflite alone and compare op types.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Benchmark every export of a run: accuracy, latency, memory, size. Which model should ship?"""
    _setup_logging(verbose)
    from marsedge.benchmarks import bench as benchmark
    from marsedge.benchmarks import report
    from marsedge.edge_runtime import ModelError

    default_data = default_data_path(sources)
    try:  # option values the parser could not check: a usage error
        settings = benchmark.BenchSettings(
            sources=tuple(sources),
            data=str(data) if data else None,
            split=split.value if split else None,
            default_data=str(default_data) if default_data else None,
            tiles=tiles,
            threads=benchmark.parse_threads(threads),
            runs=runs,
            warmup=warmup,
            frame_size=benchmark.parse_size(frame_size),
            frame_runs=frame_runs,
            keras=not no_keras and not profile_ops,
            rss=not no_rss,
            peak=not no_peak,
            reference_kernels=reference_kernels,
            tta=tta,
            corruption_frames=corruption_frames,
            frames_data=str(frames_data or datapaths.frames_folder()) if corruption_frames else None,
        )
    except ValueError as exc:
        _fail(str(exc))
    with _one_line_errors(out):
        try:
            if profile_ops:
                _profile_ops(settings, out, json_output, write_doc, doc_note)
                return
            result = benchmark.run_bench(settings, progress=_progress_bar())
            failures = benchmark.check_results(result.report, min_miou, max_iou_drop)
            written = report.write_outputs(result, out)
            if write_doc is not None:
                plot_link = os.path.relpath(written["plot"], write_doc.parent) if "plot" in written else None
                section = report.doc_section(result.report, placeholder=doc_note, plot_link=plot_link)
                written["doc"] = report.update_doc(write_doc, section)
        except ModelError as exc:
            _fail(str(exc), 1)
    warning = result.report["settings"].get("warning")
    if warning:
        typer.echo(f"WARNING: {warning}", err=True)
    typer.echo(json.dumps(result.report, indent=2) if json_output else report.terminal_table(result.report))
    if not json_output:
        typer.echo(f"accuracy on {result.report['settings']['tiles_from']}; every column: {written['markdown']}")
    if not json_output and result.report.get("frames"):
        from marsedge.benchmarks.frames import frames_table

        typer.echo(
            "\nwhole frames (resized to the model's field of view, tiled, mask back):\n"
            + frames_table(result.report["frames"])
        )
    typer.echo("wrote " + ", ".join(str(p) for p in written.values()), err=True)
    for failure in failures:
        typer.echo(f"check failed: {failure}", err=True)
    if failures:
        raise typer.Exit(code=1)


def _profile_ops(settings, out: Path, json_output: bool, write_doc: Path | None, doc_note: str | None) -> None:
    from marsedge.benchmarks.bench import discover
    from marsedge.benchmarks.ops import profile_ops
    from marsedge.benchmarks.report import OPS_BEGIN, OPS_END, ops_markdown, update_doc
    from marsedge.core.atomic import write_text

    candidates, _ = discover(settings)
    models = [c for c in candidates if c.kind == "tflite"]
    progress = _progress_bar()
    total = len(models) * len(settings.threads)
    profiles = []
    for i, (candidate, threads) in enumerate((c, t) for c in models for t in settings.threads):
        progress(i, total, f"{candidate.label}: ops at {threads} thread(s)")
        profiles.append(profile_ops(candidate.path, threads, runs=settings.runs, warmup=settings.warmup))
    progress(total, total, "done")
    text = ops_markdown(profiles)
    payload = json.dumps([p.to_dict() for p in profiles], indent=2)
    write_text(out / "ops.md", text)
    write_text(out / "ops.json", payload + "\n")
    if write_doc is not None:
        note = f"> **Placeholder:** {doc_note}\n\n" if doc_note else ""
        command = shlex.join(
            [
                "marsedge",
                "bench",
                *settings.sources,
                "--profile-ops",
                "--threads",
                ",".join(map(str, settings.threads)),
                "--runs",
                str(settings.runs),
                "--warmup",
                str(settings.warmup),
            ]
        )
        section = f"{OPS_BEGIN}\n\n{note}Command:\n\n```sh\n{command}\n```\n\n{text}\n{OPS_END}\n"
        update_doc(write_doc, section, OPS_BEGIN, OPS_END)
    typer.echo(payload if json_output else text)
    typer.echo(f"wrote {out / 'ops.md'}, {out / 'ops.json'}" + (f", {write_doc}" if write_doc else ""), err=True)


def _progress_bar():
    """A progress callback drawing a bar on a terminal's stderr, or one line per step otherwise."""
    from marsedge.progress import ProgressBar

    return ProgressBar()


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `marsedge train`.")],
    int8: Annotated[
        bool,
        typer.Option(
            "--int8/--no-int8", help="Include the int8 formats (QAT and PTQ); --no-int8 exports float formats only."
        ),
    ] = True,
    formats: Annotated[
        Optional[tuple],
        typer.Option(
            parser=_parse_formats,
            metavar="F1,F2",
            help=f"Comma-separated subset of {', '.join(FORMATS)}.",
            show_default="all",
        ),
    ] = None,
    qat_epochs: Annotated[
        int,
        typer.Option(
            rich_help_panel=_QAT,
            min=0,
            help="QAT fine-tuning epochs (0: calibrated ranges only); the epoch with the best val mIoU is kept.",
        ),
    ] = 1,
    qat_lr: Annotated[
        float,
        typer.Option(
            rich_help_panel=_QAT, help="Peak QAT learning rate (cosine-decayed); keep it below the run's final rate."
        ),
    ] = 1e-6,
    qat_fraction: Annotated[
        float,
        typer.Option(
            rich_help_panel=_QAT, help="Share of each QAT epoch's batches to use (0-1]; lower for quick CPU exports."
        ),
    ] = 1.0,
    calib_tiles: Annotated[
        int, typer.Option(rich_help_panel=_QAT, min=1, help="Training tiles for int8 calibration.")
    ] = 256,
    out: Annotated[Optional[Path], typer.Option(help="Output folder.", show_default="RUN_DIR/export")] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(help="The run's data file, if it moved.", show_default="the path in the run's config"),
    ] = None,
    gate: Annotated[
        bool,
        typer.Option(
            "--gate/--no-gate",
            rich_help_panel=_GATE,
            help="Fail (exit 1) when QAT int8 loses more than --max-iou-drop val mean IoU; files are written either way.",
        ),
    ] = True,
    max_iou_drop: Annotated[
        float,
        typer.Option(
            rich_help_panel=_GATE,
            help="Allowed QAT int8 drop of val mean IoU vs float Keras, as a fraction (0.01 = 1 point).",
        ),
    ] = 0.01,
    threads: Annotated[
        Optional[int], typer.Option(min=1, help="Interpreter threads for evaluating the .tflite files.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Quantise a trained run (QAT int8 and comparison formats), export TFLite and print the accuracy table."""
    _setup_logging(verbose)
    with _one_line_errors(out or Path(run_dir) / "export"):
        from marsedge.export import AccuracyGateError, ExportOptions, export_run, format_table
        from marsedge.export.convert import INT8_FORMATS

        chosen = formats or FORMATS
        if not int8:
            excluded = [f for f in chosen if f in INT8_FORMATS]
            if excluded and formats:
                _fail(f"--no-int8 conflicts with --formats {','.join(excluded)}")
            chosen = tuple(f for f in chosen if f not in INT8_FORMATS)
        try:
            options = ExportOptions(
                formats=chosen,
                out=str(out) if out else None,
                data=str(data) if data else None,
                qat_epochs=qat_epochs,
                qat_lr=qat_lr,
                qat_fraction=qat_fraction,
                calib_tiles=calib_tiles,
                gate=gate,
                max_iou_drop=max_iou_drop,
                threads=threads,
            )
        except MarsEdgeError as exc:  # option values the exporter refuses
            raise UsageError(str(exc)) from None
        try:
            summary = export_run(run_dir, options)
        except AccuracyGateError as exc:
            typer.echo(format_table(exc.summary))
            _fail(str(exc), 1)
    typer.echo(format_table(summary))
    target = Path(out) if out else Path(run_dir) / "export"
    gate_line = summary["gate"]["message"]
    typer.echo(f"{gate_line}\nwrote {target}")


@app.command(name="eval")
def evaluate(
    model: Annotated[Path, typer.Argument(help="A .tflite from `marsedge export`, or a run directory (float Keras).")],
    data: Annotated[
        Optional[Path], typer.Option(help="AN2DL .npz or folder of image/mask PNG pairs.", show_default=_DATA_DEFAULT)
    ] = None,
    split: Annotated[
        Optional[EvalSplit],
        typer.Option(
            metavar="NAME",
            help="all, or the model's train, val or test split of its own data file (known from a run directory, or from the split recipe a .tflite carries). Scores on tiles the model trained on are labelled.",
            show_default="test when the model's split is known, else all",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Interpreter threads for a .tflite.")] = None,
    anatomy: Annotated[
        bool,
        typer.Option(
            "--anatomy",
            help="Also show where the errors are: near label boundaries, on big rock, top and bottom halves of frames.",
        ),
    ] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            help="Also draw a PNG: the confusion matrix, or with --corruptions each condition's share of clean mIoU (needs matplotlib: the train extra)."
        ),
    ] = None,
    reliability: Annotated[
        Optional[Path],
        typer.Option(
            metavar="PNG",
            help="Also draw the reliability diagram: accuracy against calibrated confidence (needs matplotlib).",
        ),
    ] = None,
    corruptions: Annotated[
        bool,
        typer.Option(
            "--corruptions",
            help="Score whole labelled frames clean and under noise, blur, JPEG, exposure and frame size (three severities each, four for exposure), for the model's float and int8 files.",
            rich_help_panel="Corruption benchmark",
        ),
    ] = False,
    config: Annotated[
        Optional[Path],
        typer.Option(
            help="With --corruptions: the training config whose test (or --split val) split is scored (default: a run's config.json, or the recipe a .tflite names).",
            rich_help_panel="Corruption benchmark",
        ),
    ] = None,
    frames: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="With --corruptions: score N frames spread evenly over the split (faster, noisier).",
            rich_help_panel="Corruption benchmark",
        ),
    ] = None,
    save_json: Annotated[
        Optional[Path],
        typer.Option(
            "--save-json",
            help="With --corruptions: also write the report as JSON to this file.",
            rich_help_panel="Corruption benchmark",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Mean IoU, per-class IoU and confusion matrix of a model on labelled tiles; with
    --corruptions, the corruption benchmark on whole labelled frames."""
    _setup_logging(verbose)
    if corruptions:
        _corruptions(model, data, split.value if split else None, config, frames, threads, json_output, plot, save_json)
        return
    with _one_line_errors(model):
        from marsedge.evaluation.evaluate import evaluate as run_evaluation

        if data is None:
            data = default_data_path([model])
            if data is None:
                _fail(_NO_DATA, 1)
        report = run_evaluation(model, data, split.value if split else None, threads, anatomy=anatomy)
        if plot is not None:
            from marsedge.plots import confusion_png

            confusion_png(
                report["confusion_matrix"], plot, title=f"{model.name} on {report['split']} ({report['tiles']} tiles)"
            )
        if reliability is not None:
            from marsedge.plots import reliability_png

            reliability_png(
                report["calibration"], reliability, title=f"{model.name} on {report['split']} ({report['tiles']} tiles)"
            )
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(format_report(report))
    if anatomy:
        from marsedge.evaluation.anatomy import anatomy_markdown

        typer.echo("\n" + anatomy_markdown(report["anatomy"]))
    for path in (plot, reliability):
        if path is not None:
            typer.echo(f"wrote {path}", err=True)


@app.command()
def compare(
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_OR_MODEL...",
            help="Run directories, .tflite files or bundled models (navcam, ...) scored on the same tiles or whole frames (at the finest field of view among them); the first is the baseline.",
        ),
    ],
    data: Annotated[
        Optional[Path],
        typer.Option(
            help="Labelled tiles (AN2DL .npz or PNG folder) or frames (AI4Mars layout) (default: the first run's "
            "data, or the file a .tflite's split recipe names)",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        EvalSplit,
        typer.Option(metavar="NAME", help="The runs' split to score: val, test, train, or all (every tile of --data)."),
    ] = EvalSplit.val,
    resamples: Annotated[int, typer.Option(min=1, help="Bootstrap draws of whole frames.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    ensemble: Annotated[
        bool, typer.Option("--ensemble", help="Also score the average of the models' class probabilities.")
    ] = False,
    tta: Annotated[
        bool, typer.Option("--tta", help="Score every model with test-time flip averaging (as marsedge-run --tta).")
    ] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Interpreter threads for .tflite models.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Are these models really different? Mean IoU of each, and its difference to the first with a 95% interval from a paired bootstrap over frames."""
    _setup_logging(verbose)
    with _one_line_errors(data or sources[0]):
        from marsedge.evaluation.compare import compare_markdown, compare_models

        report = compare_models(sources, data, split.value, resamples, seed, ensemble, threads, tta)
    typer.echo(json.dumps(report, indent=2) if json_output else compare_markdown(report))


@app.command()
def runs(
    run_dirs: Annotated[
        Optional[list[Path]],
        typer.Argument(
            metavar="RUN_DIR...", help="Run directories, or folders of them (default: runs)", show_default=False
        ),
    ] = None,
    baseline: Annotated[
        Optional[Path],
        typer.Option(help="Run the changes and deltas are measured against (default: the first).", show_default=False),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Table of training runs: what each changed, its size, speed and val/test mean IoU against a baseline."""
    try:
        from marsedge.evaluation.runs import find_runs, runs_markdown, runs_summary

        rows = runs_summary(find_runs(run_dirs or [Path("runs")]), baseline)
    except MarsEdgeError as exc:
        _fail_with(exc)
    except OSError as exc:
        _fail_io(exc, (run_dirs or [Path("runs")])[0])
    typer.echo(json.dumps(rows, indent=2) if json_output else runs_markdown(rows))


def _corruptions(model, data, split, config, frames, threads, json_output, plot, save_json) -> None:
    from marsedge.benchmarks import corruptions as bench

    data = data or datapaths.frames_folder()
    if not (data / "msl").is_dir():
        _fail(
            f"{data}: --corruptions needs whole labelled frames in the AI4Mars layout (msl/ncam/images/edr, msl/ncam/labels/train)",
            1,
        )
    with _one_line_errors(data):
        models = bench.precision_models(model)
        split = split or "test"
        if config is None and model.is_dir() and (model / "config.json").is_file():
            config = model / "config.json"
        positions = bench.select_frames(next(iter(models.values())), data, split, config, frames)
        if split == "all":
            typer.echo("warning: --split all scores every frame, the ones the model trained on included", err=True)
        show = None if json_output else (lambda text: typer.echo(f"  {text}", err=True))
        report = bench.corruption_report(models, data, positions, threads, progress=show)
        report["split"] = split
        if save_json:
            bench.write_json(report, save_json)
        if plot:
            bench.plot(report["tables"], plot)
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{report['frames']} whole frames of {data} [{split}], seed {report['seed']}")
    typer.echo(bench.markdown(report["tables"]))
    for label, table in report["tables"].items():
        clean = table["clean"]
        precision, recall = (
            "-" if clean[key] is None else f"{clean[key]:.3f}" for key in ("big_rock_precision", "big_rock_recall")
        )
        typer.echo(f"{label}: big rock precision {precision}, recall {recall} (clean frames)")
    for path in (save_json, plot):
        if path:
            typer.echo(f"wrote {path}")


def format_report(report: dict) -> str:
    """Human-readable eval report: mean IoU, per-class IoU, confusion matrix (rows: truth)."""
    names = report["class_names"]
    lines = [f"WARNING: {report['warning']}"] if report.get("warning") else []
    lines += [
        f"{report['model']} ({report['kind']}) on {report['data']} [{report['split']}, {report['tiles']} tiles]",
        f"mean IoU {report['mean_iou']:.4f}",
    ]
    for name, value in report["class_iou"].items():
        lines.append(f"  {name:<10} {'-' if value is None else f'{value:.4f}'}")
    if report.get("calibration"):
        from marsedge.evaluation.calibration import calibration_lines

        lines += calibration_lines(report["calibration"])
    width = max(max(len(n) for n in names), max(len(str(v)) for row in report["confusion_matrix"] for v in row)) + 1
    lines.append("confusion matrix (rows: truth, columns: prediction; unlabeled truth ignored)")
    lines.append(" " * width + "".join(n.rjust(width) for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(name.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


@app.command()
def batch(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCE...",
            help="Folders, globs, images, PDS products, ROS bags, or text files of paths (one per line); local or s3:// and other URIs.",
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder every worker can write: masks, JSON records, marsedge-batch.parquet.")
    ],
    address: Annotated[
        Optional[str],
        typer.Option(
            help="Ray instance: local (start one here), auto (from `ray start --head`), HOST:PORT or ray://HOST:10001.",
            show_default="$RAY_ADDRESS, else local",
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Ray actors, each holding one segmenter.",
            show_default="one per CPU of the Ray instance; with --threads T, its CPUs / T",
        ),
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Interpreter threads per actor.",
            show_default="1; with --workers W, the instance's CPUs / W",
        ),
    ] = None,
    overlay: Annotated[bool, typer.Option("--overlay", help="Also write the overlay PNGs.")] = False,
    model: Annotated[
        Optional[Path],
        typer.Option(
            help=f"marsedge .tflite model, or a bundled model's name ({', '.join(BUNDLED_MODELS)}).",
            show_default=next(iter(BUNDLED_MODELS)),
            rich_help_panel=_BATCH_MODEL,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per actor call.")] = 4,
    max_pixels: Annotated[
        int, typer.Option(min=0, help="Refuse larger frames (as marsedge-run); 0 = off.", rich_help_panel=_BATCH_MODEL)
    ] = 64_000_000,
    tile_overlap: Annotated[
        int,
        typer.Option(
            min=0, help="Pixels shared by neighbouring tiles (as marsedge-run).", rich_help_panel=_BATCH_MODEL
        ),
    ] = 16,
    frame_width: Annotated[
        Optional[float],
        typer.Option(
            metavar="PX",
            help="Each input is a crop of a frame PX pixels wide (as marsedge-run).",
            rich_help_panel=_BATCH_MODEL,
        ),
    ] = None,
    scale: Annotated[
        Optional[float],
        typer.Option(
            metavar="S",
            help="Resize every input by S model pixels per input pixel (as marsedge-run).",
            rich_help_panel=_BATCH_MODEL,
        ),
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Also segment the mirrored frame and average (as marsedge-run).")
    ] = False,
    confidence: Annotated[
        bool, typer.Option("--confidence", help="Also write <stem>_confidence.png (as marsedge-run).")
    ] = False,
    min_confidence: Annotated[
        Optional[float],
        typer.Option(metavar="C", min=0.0, max=1.0, help=MIN_CONFIDENCE_HELP, rich_help_panel=_BATCH_MODEL),
    ] = None,
    ignore_mask: Annotated[
        Optional[Path],
        typer.Option(
            metavar="PNG", help=IGNORE_MASK_HELP + " Every worker must read it.", rich_help_panel=_BATCH_MODEL
        ),
    ] = None,
    bit_depth: Annotated[BitDepth, typer.Option(help=BIT_DEPTH_HELP, rich_help_panel=_BATCH_MODEL)] = BitDepth.auto,
    no_route: Annotated[bool, typer.Option("--no-route", help=NO_ROUTE_HELP, rich_help_panel=_BATCH_MODEL)] = False,
    topic: Annotated[
        Optional[str],
        typer.Option(
            metavar="TOPIC",
            help="The image topic of bag SOURCEs (as marsedge-run).",
            show_default="the bag's only image topic",
            rich_help_panel=_BATCH_ARCHIVES,
        ),
    ] = None,
    bag_out: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR",
            help="Also write a new bag DIR of the bag frames' masks (as marsedge-run).",
            rich_help_panel=_BATCH_ARCHIVES,
        ),
    ] = None,
    band: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            metavar="N",
            help="Band N (from 1) of multi-band PDS products.",
            show_default="1",
            rich_help_panel=_BATCH_ARCHIVES,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Segment a mission archive on a Ray cluster: resumable, one Parquet table of results (needs the cluster extra).

    A frame counts as done only under the same model and mask options; a rerun with others segments it again.
    """
    _setup_logging(verbose)
    if frame_width is not None and scale is not None:
        _fail("give --frame-width or --scale, not both", 2)
    if bag_out is not None and os.path.lexists(bag_out):
        _fail(f"{bag_out}: exists already: give --bag-out a new directory", 2)
    from marsedge.cluster.batch import BatchOptions, run_batch
    from marsedge.edge_runtime import ImageError, ModelError, SegmenterOptions
    from marsedge.edge_runtime.sources import SourceOptions

    options = BatchOptions(
        sources=tuple(sources),
        out=out,
        address=address,
        workers=workers,
        threads=threads,
        overlay=overlay,
        max_pixels=max_pixels or None,
        batch_size=batch_size,
        segmenter=SegmenterOptions(
            model=model,
            tile_overlap=tile_overlap,
            tta=tta,
            frame_width=frame_width,
            scale=scale,
            bit_depth=bit_depth.value,
            ignore_mask=ignore_mask,
            min_confidence=min_confidence,
            route_degraded=not no_route,
        ),
        confidence=confidence,
        source=SourceOptions(band=band, topic=topic),
        bag_out=bag_out,
    )
    with _one_line_errors(out, "interrupted; run the same command again to finish the rest"):
        try:
            result = run_batch(options, progress=_progress_bar())
        except ModelError as exc:
            _fail(f"{model or 'navcam'}: {exc}", 1)
        except ImageError as exc:  # the ignore mask, or the bag of masks (--bag-out) cannot be written
            if ignore_mask is not None and str(exc).startswith("ignore mask: "):
                _fail(f"{ignore_mask}: --ignore-mask: {str(exc).removeprefix('ignore mask: ')}", 1)
            _fail(f"{bag_out}: {exc}", 1)
        except ValueError as exc:  # a resize or tiling option the model cannot take
            _fail(str(exc), 2)
    if result.other_settings:
        typer.echo(
            f"note: {result.other_settings} frame(s) in {out} had been segmented with another model or mask "
            "options: segmented again",
            err=True,
        )
    told: set[int] = set()
    for row in result.rows:
        depth = row.get("bit_depth")
        guessed = row.get("bit_depth_from") != "label"  # a PDS label that declares its bits: nothing guessed
        if row["status"] == "segmented" and row.get("option_bit_depth") == "auto" and depth in (10, 12) and guessed:
            if depth not in told:
                told.add(depth)
                typer.echo(
                    f"note: {row['path']}: 16-bit frames with no value above {(1 << depth) - 1} are read as "
                    f"{depth}-bit (this one and any others; --bit-depth 16 reads them as full 16-bit)",
                    err=True,
                )
    for source, message in result.problems:
        typer.echo(f"error: {source}: {message}", err=True)
    for row in result.rows:
        if row["status"] == "failed":
            typer.echo(f"error: {row['path']}: {row['error']}", err=True)
    rate = (
        f", {result.frames_per_second:.1f} frames/s on {result.workers} worker(s) x {result.threads} thread(s)"
        if result.segmented
        else ""
    )
    typer.echo(
        f"{result.segmented} segmented, {result.earlier} done earlier, {result.failed} failed{rate}; table {result.table}"
    )
    if result.failed or result.problems:
        raise typer.Exit(code=1)


@app.command()
def version() -> None:
    """Print the marsedge version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

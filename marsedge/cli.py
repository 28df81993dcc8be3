"""The ``marsedge`` command: a thin Typer layer that parses options and calls library code."""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from marsedge import __version__
from marsedge.errors import MarsEdgeError

app = typer.Typer(
    name="marsedge",
    help="Train, quantise, export, evaluate and benchmark compact Mars terrain segmenters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mars_terrain_64x128.npz"
DEFAULT_FRAMES = DEFAULT_DATA.parent / "ai4mars-msl-256"
SHIPPED_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "mars_edge_fr_t20.json"


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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(message)s",
        datefmt="%H:%M:%S",
        handlers=[_StderrHandler()],
        force=True,
    )


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def default_data_path() -> Path | None:
    """``$MARSEDGE_DATA``, else ../shared/data/mars_terrain_64x128.npz beside the checkout when present."""
    import os

    env = os.environ.get("MARSEDGE_DATA")
    if env:
        return Path(env)
    return DEFAULT_DATA if DEFAULT_DATA.exists() else None


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="AN2DL .npz or folder of image/mask PNG pairs [default: $MARSEDGE_DATA or ../shared/data/mars_terrain_64x128.npz]")] = None,
    out: Annotated[Path, typer.Option(help="Run directory to create (or resume).")] = Path("runs/exp"),
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (with --resume: the run's own budget unless given).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Tiles per batch.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for split, shuffling, augmentation, weights.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="JSON config file (keys of TrainConfig); options given here override it.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    init_from: Annotated[Optional[Path], typer.Option(help="Start from the best weights of this run directory (fine-tuning: fresh optimizer and schedule; same model shape and split required).")] = None,
    teacher: Annotated[Optional[list[Path]], typer.Option(help="Distil from this run directory's best weights, or from a .tflite it exported (repeat for an ensemble; same data and split required).")] = None,
    distill_weight: Annotated[Optional[float], typer.Option(help="Weight of the distillation term (with --teacher).")] = None,
    distill_class_weighted: Annotated[Optional[bool], typer.Option("--distill-class-weighted/--distill-unweighted", help="Weight each pixel's distillation term by the class weight the teachers expect there (rare classes count more).", show_default=False)] = None,
    ema_decay: Annotated[Optional[float], typer.Option(help="Validate and keep an exponential moving average of the weights with this decay per step (e.g. 0.999); 0 turns it off.")] = None,
    ema_select: Annotated[Optional[str], typer.Option(help="With --ema-decay: 'average' (validate and keep the averaged weights) or 'either' (each epoch, whichever of the averaged and raw weights scores higher on val).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Peak AdamW learning rate.")] = None,
    loss: Annotated[Optional[str], typer.Option(help="focal, focal_dice, focal_lovasz or cross_entropy.")] = None,
    augment: Annotated[Optional[str], typer.Option(help="none, flips (left-right mirror, the default), mild (adds zoom-in up to 1.2x and small shifts), camera (adds gain, gamma, slight blur, JPEG and sensor noise) or strong (adds up-down flips, rotation, zoom, brightness).")] = None,
    base_filters: Annotated[Optional[int], typer.Option(help="Width of the first U-Net level.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use about N tiles, whole frames drawn at random with --seed (quick runs).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience (epochs).")] = None,
    mixed_precision: Annotated[bool, typer.Option(help="float16 compute (GPU).")] = False,
    strategy: Annotated[Optional[str], typer.Option(help="default or mirrored (several GPUs).")] = None,
    keep_background: Annotated[bool, typer.Option("--keep-background", help="Score and predict class 0 too (default: ignore unlabeled pixels).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a compact U-Net on Mars terrain tiles and write a run directory."""
    _setup_logging(verbose)
    try:
        from marsedge.train.config import TrainConfig

        base = TrainConfig.load(config) if config else TrainConfig()
        if resume and epochs is None and config is None:
            # a bare --resume keeps the run's own budget; only --epochs (or a --config) changes it
            from marsedge.train import rundir

            if (out / rundir.STATE_FILE).is_file():  # else the trainer says there is nothing to resume
                epochs = rundir.read_run(out, need_weights=False).config.epochs
        if data is None and not resume:
            data = Path(base.data) if base.data else default_data_path()
            if data is None:
                _fail("no --data given and ../shared/data/mars_terrain_64x128.npz is absent (set MARSEDGE_DATA)")
        changes = {
            k: v
            for k, v in dict(
                data=str(data) if data else None, out=str(out), epochs=epochs, batch_size=batch_size, seed=seed,
                learning_rate=learning_rate, loss=loss, augment=augment, limit=limit, patience=patience,
                strategy=strategy, init_from=str(init_from) if init_from else None,
                teachers=tuple(str(t) for t in teacher) if teacher else None, distill_weight=distill_weight,
                distill_class_weighted=distill_class_weighted, ema_decay=ema_decay, ema_select=ema_select,
            ).items()
            if v is not None
        }
        if mixed_precision:
            changes["mixed_precision"] = True
        if keep_background:
            changes["ignore_background"] = False
        if base_filters is not None:
            changes["model"] = {"base_filters": base_filters}
        settings = base.replace(**changes)
        from marsedge.train.trainer import train as run_training

        metrics = run_training(settings, resume=resume)
    except MarsEdgeError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail(f"interrupted; continue with: marsedge train --out {out} --resume")
    typer.echo(
        f"val mIoU {metrics['val']['mean_iou']:.4f} (best epoch {metrics['best_epoch']}); run directory: {out}"
    )


@app.command()
def bench(
    sources: Annotated[list[str], typer.Argument(metavar="RUN_DIR_OR_MODEL...", help="Run directories (Keras model + RUN/export/*.tflite), export folders or .tflite files.")],
    data: Annotated[Optional[Path], typer.Option(help="Labelled tiles to score (AN2DL .npz or PNG folder); with a run it replaces the run's data file, same split [default for .tflite files: $MARSEDGE_DATA or ../shared/data/mars_terrain_64x128.npz].", show_default=False)] = None,
    split: Annotated[Optional[str], typer.Option(help="The split to score: val, test, train or all [default: a run's val; for .tflite files carrying their split recipe (the bundled ones do), their test split of their training data; else every tile]. Scores on tiles the models trained on are labelled.", show_default=False)] = None,
    tiles: Annotated[int, typer.Option(min=0, help="Score at most N tiles, evenly spaced over the split; 0 = all.")] = 0,
    threads: Annotated[str, typer.Option(help="Interpreter thread counts to time, comma-separated.")] = "1,2",
    runs: Annotated[int, typer.Option(min=1, help="Timed single-tile inferences per model and thread count (ops timed per op with --profile-ops).")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed inferences before the timed ones.")] = 5,
    frame_size: Annotated[str, typer.Option(help="Full frame HEIGHTxWIDTH timed through the runtime's tiling.")] = "1024x1024",
    frame_runs: Annotated[int, typer.Option(min=0, help="Timed full frames per model and thread count; 0 skips frames.")] = 3,
    out: Annotated[Path, typer.Option(help="Directory for benchmarks.md, .json, .png and .log (ops.md, ops.json with --profile-ops).")] = Path("benchmarks"),
    json_output: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout instead of the table.")] = False,
    min_miou: Annotated[Optional[float], typer.Option(help="Check: exit 1 when a model's mIoU is below this.")] = None,
    max_iou_drop: Annotated[Optional[float], typer.Option(help="Check: exit 1 when a model's mIoU is more than this below the float reference.")] = None,
    keras: Annotated[bool, typer.Option("--keras/--no-keras", help="Score the run's Keras float model (needs TensorFlow: the train extra).")] = True,
    rss: Annotated[bool, typer.Option("--rss/--no-rss", help="Measure the peak memory of a separate runtime process per model.")] = True,
    peak: Annotated[bool, typer.Option("--peak/--no-peak", help="Measure the machine's float32 GEMM peak per thread count.")] = True,
    reference_kernels: Annotated[bool, typer.Option(help="Builtin reference kernels instead of XNNPACK: slow; for correctness checks under qemu.")] = False,
    tta: Annotated[bool, typer.Option("--tta", help="Also measure every .tflite with test-time flip averaging (marsedge-run --tta), as rows of their own.")] = False,
    write_doc: Annotated[Optional[Path], typer.Option(help="Also replace the generated section of this Markdown file (BENCHMARKS.md).")] = None,
    doc_note: Annotated[Optional[str], typer.Option(help="A note shown at the top of the --write-doc section (e.g. that it is a placeholder).")] = None,
    profile_ops: Annotated[bool, typer.Option("--profile-ops", help="Instead of the benchmark: time every op of each .tflite alone and compare op types.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Benchmark every export of a run: accuracy, latency, memory, size. Which model should ship?"""
    _setup_logging(verbose)
    from marsedge.edge_runtime import ModelError

    try:
        from marsedge.benchmarks import bench as benchmark
        from marsedge.benchmarks import report

        settings = benchmark.BenchSettings(
            sources=tuple(sources), data=str(data) if data else None, split=split, tiles=tiles,
            default_data=str(default_data_path()) if default_data_path() else None,
            threads=benchmark.parse_threads(threads), runs=runs, warmup=warmup,
            frame_size=benchmark.parse_size(frame_size), frame_runs=frame_runs, keras=keras and not profile_ops,
            rss=rss, peak=peak, reference_kernels=reference_kernels, tta=tta,
        )
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
    except (MarsEdgeError, ModelError, ValueError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename or out}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        _fail("interrupted")
    warning = result.report["settings"].get("warning")
    if warning:
        typer.echo(f"WARNING: {warning}", err=True)
    typer.echo(json.dumps(result.report, indent=2) if json_output else report.terminal_table(result.report))
    if not json_output:
        typer.echo(f"accuracy on {result.report['settings']['tiles_from']}; every column: {written['markdown']}")
    if not json_output and result.report.get("frames"):
        from marsedge.benchmarks.frames import frames_table

        typer.echo("\nwhole frames (resized to the model's field of view, tiled, mask back):\n" + frames_table(result.report["frames"]))
    typer.echo("wrote " + ", ".join(str(p) for p in written.values()), err=True)
    for failure in failures:
        typer.echo(f"check failed: {failure}", err=True)
    if failures:
        raise typer.Exit(code=1)


def _profile_ops(settings, out: Path, json_output: bool, write_doc: Path | None, doc_note: str | None) -> None:
    from marsedge.atomic import write_text
    from marsedge.benchmarks.bench import discover
    from marsedge.benchmarks.ops import profile_ops
    from marsedge.benchmarks.report import OPS_BEGIN, OPS_END, ops_markdown, update_doc

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
            ["marsedge", "bench", *settings.sources, "--profile-ops", "--threads", ",".join(map(str, settings.threads)),
             "--runs", str(settings.runs), "--warmup", str(settings.warmup)]
        )
        section = f"{OPS_BEGIN}\n\n{note}Command:\n\n```sh\n{command}\n```\n\n{text}\n{OPS_END}\n"
        update_doc(write_doc, section, OPS_BEGIN, OPS_END)
    typer.echo(payload if json_output else text)
    typer.echo(f"wrote {out / 'ops.md'}, {out / 'ops.json'}" + (f", {write_doc}" if write_doc else ""), err=True)


def _progress_bar():
    """A progress callback drawing a bar on a terminal's stderr, or one line per step otherwise."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int, message: str) -> None:
        width = 24
        filled = width * done // max(total, 1)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {message}"
        if tty:
            sys.stderr.write("\r" + line[:119].ljust(119) + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `marsedge train`.")],
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Include the int8 formats (QAT and PTQ); --no-int8 exports float formats only.")] = True,
    formats: Annotated[Optional[str], typer.Option(help="Comma-separated subset of float32, float16, dynamic, ptq, qat (default: all).")] = None,
    qat_epochs: Annotated[int, typer.Option(min=0, help="QAT fine-tuning epochs (0: calibrated ranges only); the epoch with the best val mIoU is kept.")] = 1,
    qat_lr: Annotated[float, typer.Option(help="Peak QAT learning rate (cosine-decayed); keep it below the run's final rate.")] = 1e-6,
    qat_fraction: Annotated[float, typer.Option(help="Share of each QAT epoch's batches to use (0-1]; lower for quick CPU exports.")] = 1.0,
    calib_tiles: Annotated[int, typer.Option(min=1, help="Training tiles for int8 calibration.")] = 256,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: RUN_DIR/export).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="The run's data file, if it moved (default: the path in the run's config).")] = None,
    gate: Annotated[bool, typer.Option("--gate/--no-gate", help="Fail (exit 1) when QAT int8 loses more than --max-iou-drop val mean IoU; files are written either way.")] = True,
    max_iou_drop: Annotated[float, typer.Option(help="Allowed QAT int8 drop of val mean IoU vs float Keras, as a fraction (0.01 = 1 point).")] = 0.01,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Interpreter threads for evaluating the .tflite files.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Quantise a trained run (QAT int8 and comparison formats), export TFLite and print the accuracy table."""
    _setup_logging(verbose)
    try:
        from marsedge.export import AccuracyGateError, ExportOptions, export_run, format_table
        from marsedge.export.convert import FORMATS, INT8_FORMATS, parse_formats

        chosen = parse_formats(formats) if formats else FORMATS
        if not int8:
            excluded = [f for f in chosen if f in INT8_FORMATS]
            if excluded and formats:
                _fail(f"--no-int8 conflicts with --formats {','.join(excluded)}")
            chosen = tuple(f for f in chosen if f not in INT8_FORMATS)
        options = ExportOptions(
            formats=chosen, out=str(out) if out else None, data=str(data) if data else None, qat_epochs=qat_epochs,
            qat_lr=qat_lr, qat_fraction=qat_fraction, calib_tiles=calib_tiles, gate=gate, max_iou_drop=max_iou_drop,
            threads=threads,
        )
        try:
            summary = export_run(run_dir, options)
        except AccuracyGateError as exc:
            typer.echo(format_table(exc.summary))
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None
    except MarsEdgeError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    typer.echo(format_table(summary))
    target = Path(out) if out else Path(run_dir) / "export"
    gate_line = summary["gate"]["message"]
    typer.echo(f"{gate_line}\nwrote {target}")


@app.command(name="eval")
def evaluate(
    model: Annotated[Path, typer.Argument(help="A .tflite from `marsedge export`, or a run directory (float Keras).")],
    data: Annotated[Optional[Path], typer.Option(help="AN2DL .npz or folder of image/mask PNG pairs (default: $MARSEDGE_DATA or ../shared/data/mars_terrain_64x128.npz).")] = None,
    split: Annotated[Optional[str], typer.Option(help="all, or the model's train / val / test split of its own data file (known from a run dir, or from the split recipe a .tflite carries) [default: test when the model's split is known, else all]. Scores on tiles the model trained on are labelled.", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Interpreter threads for a .tflite.")] = None,
    corruptions: Annotated[bool, typer.Option("--corruptions", help="Score whole labelled frames clean and under noise, blur, JPEG, exposure and frame size (three severities each), for the model's float and int8 files.", rich_help_panel="Corruption benchmark")] = False,
    config: Annotated[Optional[Path], typer.Option(help="With --corruptions: the training config whose test split is scored (default: the shipped model's recipe).", rich_help_panel="Corruption benchmark")] = None,
    frames: Annotated[Optional[int], typer.Option(min=1, help="With --corruptions: score N frames spread evenly over the split (faster, noisier).", rich_help_panel="Corruption benchmark")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="With --corruptions: write a bar chart (PNG) of each condition's share of clean mIoU.", rich_help_panel="Corruption benchmark")] = None,
    save_json: Annotated[Optional[Path], typer.Option("--save-json", help="With --corruptions: also write the report as JSON to this file.", rich_help_panel="Corruption benchmark")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Mean IoU, per-class IoU and confusion matrix of a model on labelled tiles; with
    --corruptions, the corruption benchmark on whole labelled frames."""
    _setup_logging(verbose)
    if corruptions:
        _corruptions(model, data, split, config, frames, threads, json_output, plot, save_json)
        return
    try:
        from marsedge.export.evaluate import evaluate as run_evaluation

        if data is None:
            data = default_data_path()
            if data is None:
                _fail("no --data given and ../shared/data/mars_terrain_64x128.npz is absent (set MARSEDGE_DATA)")
        report = run_evaluation(model, data, split, threads)
    except MarsEdgeError as exc:
        _fail(str(exc))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(format_report(report))


def _corruptions(model, data, split, config, frames, threads, json_output, plot, save_json) -> None:
    from marsedge.benchmarks import corruptions as bench

    data = data or (Path(os.environ["MARSEDGE_FRAMES"]) if os.environ.get("MARSEDGE_FRAMES") else DEFAULT_FRAMES)
    if not (data / "msl").is_dir():
        _fail(f"{data}: --corruptions needs whole labelled frames in the AI4Mars layout (msl/ncam/images/edr, msl/ncam/labels/train)")
    try:
        models = bench.precision_models(model)
        positions = None
        split = split or "test"
        if split == "test":
            recipe = config or (model / "config.json" if model.is_dir() else SHIPPED_RECIPE)
            positions = bench.test_frames(next(iter(models.values())), recipe, data)
        elif split != "all":
            _fail(f"--corruptions scores the test split or all frames, not {split!r}")
        else:
            typer.echo("warning: --split all scores every frame, the ones the model trained on included", err=True)
        if frames is not None and positions is not None:
            positions = positions[:: max(1, len(positions) // frames)][:frames]  # spread over the split
        elif frames is not None:
            positions = list(range(frames))
        show = None if json_output else (lambda text: typer.echo(f"  {text}", err=True))
        report = bench.corruption_report(models, data, positions, threads, progress=show)
        report["split"] = split
        if save_json:
            bench.write_json(report, save_json)
        if plot:
            bench.plot(report["tables"], plot)
    except MarsEdgeError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename or data}: {exc.strerror or exc}")
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
    width = max(max(len(n) for n in names), max(len(str(v)) for row in report["confusion_matrix"] for v in row)) + 1
    lines.append("confusion matrix (rows: truth, columns: prediction; unlabeled truth ignored)")
    lines.append(" " * width + "".join(n.rjust(width) for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(name.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


@app.command()
def version() -> None:
    """Print the marsedge version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

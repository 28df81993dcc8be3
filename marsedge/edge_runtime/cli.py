"""``marsedge-run``: segment images on the rover board. Parses options, calls the library,
prints; the work is in :mod:`.batch` and :mod:`.segmenter`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .batch import expand_inputs, output_stem, segment_file, summary
from .errors import ImageError, ModelError
from .imageio import DEFAULT_MAX_PIXELS
from .segmenter import DEFAULT_MODEL, DEFAULT_TILE_OVERLAP, Segmenter

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def run(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", help="Image files, directories and globs (PNG/JPEG).")],
    model: Annotated[
        Optional[Path], typer.Option(help="marsedge .tflite model; default: the int8 model bundled with the package.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory for <stem>_mask.png, <stem>_overlay.png, <stem>.json.")] = Path(
        "marsedge_out"
    ),
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON record per image on stdout.")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Interpreter CPU threads; default: its own choice.")] = None,
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Write the overlay PNG.")] = True,
    tile_overlap: Annotated[
        int, typer.Option(min=0, help="Pixels shared by neighbouring tiles of frames larger than the model input.")
    ] = DEFAULT_TILE_OVERLAP,
    reference_kernels: Annotated[
        bool, typer.Option(help="Builtin reference kernels (no XNNPACK): slower, bit-identical across CPUs.")
    ] = False,
    tta: Annotated[bool, typer.Option(help="Also segment the mirrored image and average (twice the time).")] = False,
    max_pixels: Annotated[
        int, typer.Option(min=0, help="Refuse images with more pixels (decompression bombs); 0 = Pillow's limit.")
    ] = DEFAULT_MAX_PIXELS,
) -> None:
    """Segment Mars terrain images into soil, bedrock, sand and big rock."""
    try:
        segmenter = Segmenter(model, threads, reference_kernels, tile_overlap, tta)
    except ModelError as exc:
        _fail(f"{model or DEFAULT_MODEL}: {exc}")
    except ValueError as exc:
        _fail(str(exc))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"{out}: cannot create output directory: {exc.strerror or exc}")

    paths, problems = expand_inputs(inputs)
    for problem in problems:
        _error(f"{problem.source}: {problem.message}")
    failures = len(problems)
    class_names = {c.id: c.name for c in segmenter.classes}
    names = [class_names[k] for k in segmenter.metadata["output_classes"]]
    if not json_lines:
        print(_row("size", "tiles", "ms", names, "image"))
    latencies: list[float] = []
    used_stems: set[str] = set()
    for path in paths:
        try:
            record = segment_file(segmenter, path, out, output_stem(path, used_stems), overlay, max_pixels or None)
        except ImageError as exc:
            failures += 1
            _error(f"{path}: {exc}")
            continue
        except OSError as exc:
            failures += 1
            _error(f"{path}: cannot write outputs to {out}: {exc.strerror or exc}")
            continue
        except Exception as exc:  # never a traceback for one bad image; the batch goes on
            failures += 1
            _error(f"{path}: unexpected {type(exc).__name__}: {exc}")
            continue
        latencies.append(record["latency_ms"]["total"])
        if json_lines:
            print(json.dumps(record), flush=True)
        else:
            size = f"{record['size']['width']}x{record['size']['height']}"
            shares = [f"{100 * record['class_fractions'][n]:.1f}%" for n in names]
            print(_row(size, str(record["tiles"]), f"{record['latency_ms']['total']:.1f}", shares, str(path)), flush=True)

    line = summary(latencies, failures)
    print(line, file=sys.stderr if json_lines else sys.stdout)
    if failures:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point of ``marsedge-run``."""
    app()


def _row(size: str, tiles: str, ms: str, classes: list[str], image: str) -> str:
    return f"{size:>9} {tiles:>5} {ms:>8} " + " ".join(f"{c:>9}" for c in classes) + f"  {image}"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _fail(message: str) -> None:
    _error(message)
    raise typer.Exit(1)


if __name__ == "__main__":
    main()

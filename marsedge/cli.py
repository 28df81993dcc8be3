"""The ``marsedge`` command: a thin Typer layer that parses options and calls library code."""
from __future__ import annotations

import json
import logging
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


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
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
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Tiles per batch.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for split, shuffling, augmentation, weights.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="JSON config file (keys of TrainConfig); options given here override it.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    learning_rate: Annotated[Optional[float], typer.Option(help="Peak AdamW learning rate.")] = None,
    loss: Annotated[Optional[str], typer.Option(help="focal, focal_dice or cross_entropy.")] = None,
    augment: Annotated[Optional[str], typer.Option(help="none, flips or strong.")] = None,
    base_filters: Annotated[Optional[int], typer.Option(help="Width of the first U-Net level.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N tiles (quick runs).")] = None,
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
        if data is None and not resume:
            data = Path(base.data) if base.data else default_data_path()
            if data is None:
                _fail("no --data given and ../shared/data/mars_terrain_64x128.npz is absent (set MARSEDGE_DATA)")
        changes = {
            k: v
            for k, v in dict(
                data=str(data) if data else None, out=str(out), epochs=epochs, batch_size=batch_size, seed=seed,
                learning_rate=learning_rate, loss=loss, augment=augment, limit=limit, patience=patience,
                strategy=strategy,
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
def version() -> None:
    """Print the marsedge version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

"""A run whose weights lie between a fine-tuned run and the float32 file it started from.

    python tools/interpolate_weights.py runs/navcam_robust_ft --alpha 0.5 --out runs/navcam_robust_mix50
    python tools/interpolate_weights.py runs/navcam_robust_ft --last --alpha 0.8 --out runs/navcam_robust_mix80
    python tools/interpolate_weights.py runs/navcam --last --alpha 0.75 --start runs/navcam/mixed_with --out runs/mix75
    python tools/interpolate_weights.py runs/navcam --last --alpha 0.5 --layer-alpha enc=1 \
        --start runs/navcam/mixed_with --out runs/mix_enc

Weight-space interpolation of a fine-tune with its starting point (WiSE-FT, Wortsman et
al. 2022): ``(1 - alpha) * start + alpha * fine_tuned``, layer by layer. A run fine-tuned
with ``init_from`` a float32 export stays in the basin of its start (batch normalisation
fixed at the file's fold), so the two can be mixed: alpha 0 is the start, 1 the fine-tune.
The start is the run's ``init_from`` file unless ``--start`` names another, or another run
fine-tuned from the same file (a model soup: how other shares of ``configs/navcam.json``'s
mix are tried on val without training again; ``marsedge train`` mixes by ``mix_alpha``
itself). ``--last`` takes
the fine-tune's last epoch (its weight average, from the checkpoint ``state.json`` names)
instead of its best by clean val: under a corruption augmentation the clean val score
levels off within a few epochs while robustness keeps growing, and the mix restores the
clean accuracy (WiSE-FT mixes the end of the fine-tune). The output is a
run directory (the fine-tune's config, split and derived values, the mixed best weights)
that `marsedge export` and `marsedge eval` take as they take any run. ``--layer-alpha
PREFIX=A`` gives the layers whose names start with PREFIX (``enc``, ``enc0``, ``dec2``,
``bottleneck``, ``logits``) another share than ``--alpha``; the first matching prefix wins.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np


def last_epoch_weights(run, model) -> int:
    """Loads the run's last checkpoint into ``model`` (its weight average, with ``ema_decay``);
    returns that epoch's number (1-based)."""
    from marsedge.train import rundir
    from marsedge.train.ema import WeightAverage
    from marsedge.train.tf_env import keras, tf

    state = json.loads((run.path / rundir.STATE_FILE).read_text())
    average = WeightAverage(tf, keras, model, run.config.ema_decay) if run.config.ema_decay else None
    extra = {"ema": average.module} if average else {}
    tf.train.Checkpoint(model=model, **extra).restore(str(run.path / state["checkpoint"])).expect_partial()
    if average:
        model.set_weights([shadow.numpy() for shadow in average.module.shadow])
    return int(state["epoch"]) + 1


def interpolate(
    run_dir: Path,
    out: Path,
    alpha: float,
    start: Path | None = None,
    last: bool = False,
    layer_alphas: dict[str, float] | None = None,
) -> Path:
    from marsedge.train import rundir
    from marsedge.train.tf_env import keras
    from marsedge.train.tflite_weights import NEW_HEAD_PREFIX, load_tflite_weights

    run = rundir.read_run(run_dir)
    start = Path(start or run.config.init_from or "")
    if not start.is_dir() and (start.suffix != ".tflite" or not start.is_file()):
        raise SystemExit(f"{run_dir}: its init_from is not a float32 .tflite file; give --start")
    if not 0.0 <= alpha <= 1.0:
        raise SystemExit(f"--alpha must be in [0, 1], got {alpha}")
    tuned = rundir.load_model(run)
    epoch = last_epoch_weights(run, tuned) if last else None
    if start.is_dir():  # another fine-tune of the same start file (model soup of two runs)
        base = rundir.load_model(rundir.read_run(start))
    else:
        base = rundir.load_model(run)
        load_tflite_weights(base, start)
    # Layer-wise mixing is only meaningful when both hold the same batch-norm fold: a run
    # fine-tuned from the file keeps the file's (fixed) normalisation. A refine head the file
    # does not hold learns its own in each run and is mixed like any weight (as mix_alpha does).
    for before, after in zip(base.layers, tuned.layers):
        if (
            isinstance(before, keras.layers.BatchNormalization)
            and not before.name.startswith(NEW_HEAD_PREFIX)
            and not all(np.allclose(b, t) for b, t in zip(before.get_weights(), after.get_weights()))
        ):
            raise SystemExit(
                f"{run_dir}: its batch normalisation ({before.name}) differs from {start}'s; "
                "interpolate a run fine-tuned from that file (init_from)"
            )
    layer_alphas = layer_alphas or {}
    for before, after in zip(base.layers, tuned.layers):
        share = next((a for prefix, a in layer_alphas.items() if after.name.startswith(prefix)), alpha)
        after.set_weights([(1.0 - share) * b + share * t for b, t in zip(before.get_weights(), after.get_weights())])
    out.mkdir(parents=True, exist_ok=True)
    for name in (rundir.CONFIG_FILE, rundir.SPLIT_FILE):
        shutil.copy2(run.path / name, out / name)
    tuned.save_weights(str(out / rundir.BEST_WEIGHTS))
    (out / "interpolation.json").write_text(
        json.dumps(
            {"fine_tuned": str(run_dir), "epoch": epoch or "best", "start": str(start), "alpha": alpha}
            | ({"layer_alphas": layer_alphas} if layer_alphas else {}),
            indent=2,
        )
        + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the fine-tuned run directory")
    parser.add_argument("--alpha", type=float, required=True, help="share of the fine-tune (0..1)")
    parser.add_argument(
        "--start",
        type=Path,
        help="the float32 .tflite it started from (default: its init_from), or another run fine-tuned from it",
    )
    parser.add_argument("--last", action="store_true", help="the last epoch's weights, not the best by clean val")
    parser.add_argument(
        "--layer-alpha",
        action="append",
        default=[],
        metavar="PREFIX=A",
        help="another share for the layers whose names start with PREFIX (enc0, dec3, bottleneck...); repeatable",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    layer_alphas = {}
    for item in args.layer_alpha:
        prefix, _, value = item.partition("=")
        try:
            layer_alphas[prefix] = float(value)
        except ValueError:
            raise SystemExit(f"--layer-alpha {item}: expected PREFIX=A with A a number") from None
        if not 0.0 <= layer_alphas[prefix] <= 1.0:
            raise SystemExit(f"--layer-alpha {item}: A must be in [0, 1]")
    print(interpolate(args.run, args.out, args.alpha, args.start, args.last, layer_alphas))


if __name__ == "__main__":
    main()

"""Copy a run's QAT int8 (and float32) export into the package as the bundled model.

    python tools/bundle_model.py runs/marsedge_navcam
    python tools/bundle_model.py --stamp-split configs/marsedge_navcam.json
    python tools/bundle_model.py --restamp [--model-pixels-per-frame 128]
    python tools/bundle_model.py --stamp-names marsedge-navcam configs/marsedge_navcam.json

The AN2DL tiles were cut from 256x256 AI4Mars frames reduced 2x, so the bundled model's
metadata says ``input.model_pixels_per_frame = 128`` (the export writes the run's
``frame_pixels``): a whole frame of any size is resized so its longer side is 128 pixels
before tiling, and the mask is resized back. Prints the sha256 of what it wrote.

``--restamp`` rewrites the bundled files' metadata in the current format
(``marsedge-tflite/2``: ``model_pixels_per_frame`` instead of ``marsedge-tflite/1``'s fixed
``input.scale``, class 0 named "unlabeled") and checks that the flatbuffer's bytes and
SHA-256 are unchanged.

``--stamp-names NAME RECIPE`` records user-facing names in the bundled files' metadata:
``model_name`` (what the model is called in docs and reports) and ``recipe`` (the config
that trains it). A run directory given to bundle is stamped with them too (``--name``,
``--recipe``). Only these two keys change; the flatbuffer is checked unchanged.

``--stamp-split CONFIG`` adds ``source_split`` (the data and split fingerprint that
``marsedge train --teacher FILE`` checks) and ``split`` (the recipe that recomputes the
split from the data file, so ``marsedge eval MODEL --split test`` and ``marsedge bench
MODEL`` score the held-out tiles with no run directory) to bundled files exported before
exports recorded them. It recomputes CONFIG's split of its data file and stamps it only if
the bundled float32 model proves it came from that split: its train-set normalisation and
its recorded val and test mIoU reproduce on those tiles. The flatbuffers are not touched.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

from marsedge.core.atomic import write_bytes
from marsedge.core.metadata import _strip_archive, embed_metadata, read_metadata, restamp, split_recipe

MODELS = Path(__file__).resolve().parents[1] / "marsedge" / "edge_runtime" / "models"
BUNDLE = {"marsedge_qat.tflite": "marsedge_int8.tflite", "marsedge_float32.tflite": "marsedge_float32.tflite"}


def _write(target: Path, content: bytes, metadata: dict, source: str) -> None:
    written = write_bytes(target, embed_metadata(content, metadata))
    digest = hashlib.sha256(written.read_bytes()).hexdigest()[:16]
    print(f"{source} -> {written} ({written.stat().st_size / 1024:.0f} KB, sha256 {digest})")


MODEL_NAME = "marsedge-navcam"
RECIPE = "configs/marsedge_navcam.json"


# A variant ships its int8 file only, beside the default model's pair.
VARIANTS = {"robust": {"marsedge_qat.tflite": "marsedge_robust_int8.tflite"}}


def bundle(run: Path, model_name: str = MODEL_NAME, recipe: str = RECIPE, variant: str | None = None) -> None:
    for source_name, target_name in (VARIANTS[variant] if variant else BUNDLE).items():
        source = run / "export" / source_name
        content = source.read_bytes()
        metadata = read_metadata(content)
        metadata["name"] = f"marsedge-bundled-{variant + '-' if variant else ''}{metadata['precision']}"
        metadata["bundled_from"] = str(source)
        metadata.update(model_name=model_name, recipe=recipe)
        _write(MODELS / target_name, content, metadata, str(source))


def stamp_names(model_name: str, recipe: str) -> None:
    """Adds ``model_name`` and ``recipe`` to the bundled files' metadata, nothing else."""
    for target_name in BUNDLE.values():
        target = MODELS / target_name
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        _write(target, content, {**read_metadata(content), "model_name": model_name, "recipe": recipe}, str(target))
        if _strip_archive(target.read_bytes()) != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed")


def stamp_split(config_path: Path) -> None:
    from marsedge.core.metrics import score
    from marsedge.edge_runtime.tile_model import TileModel
    from marsedge.train import rundir, trainer
    from marsedge.train.config import TrainConfig

    config = TrainConfig.load(config_path)
    tiles, split, derived, data_hash = trainer.compute_split(config)
    reference = MODELS / "marsedge_float32.tflite"
    model = TileModel.from_file(reference)
    norm, metrics = model.metadata["input"]["normalization"], model.metadata["metrics"]
    checks = {
        "train mean": (derived["mean"], norm["mean"]),
        "train std": (derived["std"], norm["std"]),
    }
    for name, recorded in (("val", metrics["export_val"]), ("test", metrics["source_test"])):
        part = tiles.subset(split[name])
        checks[f"{name} mIoU"] = (score(part.masks, model.predict_masks(part.images))["mean_iou"], recorded["mean_iou"])
    for name, (now, recorded) in checks.items():
        print(f"{name}: {now!r} here, {recorded!r} recorded")
        if not math.isclose(now, recorded, rel_tol=1e-9):
            raise SystemExit(f"{reference}: {name} does not reproduce on {config_path}'s split; not stamped")
    fingerprint = rundir.split_fingerprint(split, data_hash)
    sizes = {name: len(split[name]) for name in ("train", "val", "test")}
    recipe = split_recipe(config.to_dict(), config.data, data_hash, sizes)
    for target_name in BUNDLE.values():
        target = MODELS / target_name
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        stamped = {**read_metadata(content), "source_split": fingerprint, "split": recipe}
        _write(target, content, stamped, str(target))
        if _strip_archive(target.read_bytes()) != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed")


def restamp_bundled(model_pixels_per_frame: float) -> None:
    for target_name in BUNDLE.values():
        target = MODELS / target_name
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        _write(target, content, restamp(read_metadata(content), model_pixels_per_frame), str(target))
        after = _strip_archive(target.read_bytes())
        before_sha, after_sha = (hashlib.sha256(b).hexdigest() for b in (flatbuffer, after))
        if after != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed ({before_sha} -> {after_sha})")
        print(f"{target.name}: flatbuffer sha256 {after_sha} unchanged")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?")
    parser.add_argument(
        "--restamp", action="store_true", help="rewrite the bundled files' metadata in the current format"
    )
    parser.add_argument("--model-pixels-per-frame", type=float, default=128.0)
    parser.add_argument(
        "--stamp-split", type=Path, metavar="CONFIG", help="stamp the bundled files with CONFIG's split"
    )
    parser.add_argument("--stamp-names", nargs=2, metavar=("NAME", "RECIPE"), help="record model_name and recipe")
    parser.add_argument("--name", default=MODEL_NAME, help="model_name given to a bundled run")
    parser.add_argument("--recipe", default=RECIPE, help="recipe (config file) recorded for a bundled run")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="bundle the run as this variant (int8 only)")
    args = parser.parse_args()
    if args.stamp_names:
        stamp_names(*args.stamp_names)
    elif args.stamp_split:
        stamp_split(args.stamp_split)
    elif args.restamp:
        restamp_bundled(args.model_pixels_per_frame)
    elif args.run:
        bundle(args.run, args.name, args.recipe, args.variant)
    else:
        parser.error("give a run directory, --stamp-names NAME RECIPE, --stamp-split CONFIG or --restamp")


if __name__ == "__main__":
    main()

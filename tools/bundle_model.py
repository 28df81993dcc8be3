"""Copy a run's QAT int8 (and float32) export into the package as the bundled model.

    python tools/bundle_model.py runs/navcam                     # the default model, navcam
    python tools/bundle_model.py runs/navcam_robust_last --variant robust --name marsedge-navcam-robust
    python tools/bundle_model.py --stamp-names marsedge-navcam-tiles configs/marsedge_navcam.json --variant tiles
    python tools/bundle_model.py --stamp-split configs/marsedge_navcam.json --variant tiles
    python tools/bundle_model.py --restamp [--model-pixels-per-frame 128]
    python tools/bundle_model.py --calibrate [--variant robust|tiles]
    python tools/bundle_model.py --stamp-route robust --max-noise 1.55 --min-sharpness 0.675

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

``--calibrate`` fits each bundled file's softmax temperature on its val split (recomputed
from the split recipe in its metadata, from the data beside the checkout in
../shared/data or ``--data``) as ``marsedge export`` does for new files
(:func:`marsedge.core.calibration.calibrate_tiles`), and stamps it as ``calibration``. Only
that key changes; the flatbuffer is checked unchanged.

``--stamp-route VARIANT`` records in each of the default's files the variant's file of the
same precision as its partner for degraded frames (``degraded_route``: file name, SHA-256 and the two thresholds
of :mod:`marsedge.edge_runtime.quality`, chosen on the val split: docs/research.md,
"Routing degraded frames"). Only that key changes; the flatbuffer is checked unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
RECIPE = "configs/navcam.json"


# Beside the default model's pair: the robust variant's pair (the default's partner for
# degraded frames, each precision for its own) and the tile model the default was
# fine-tuned from (its pair: the float32 file starts and teaches the robust recipes).
VARIANTS = {
    "robust": {
        "marsedge_qat.tflite": "marsedge_robust_int8.tflite",
        "marsedge_float32.tflite": "marsedge_robust_float32.tflite",
    },
    "tiles": {
        "marsedge_qat.tflite": "marsedge_tiles_int8.tflite",
        "marsedge_float32.tflite": "marsedge_tiles_float32.tflite",
    },
}


def _files(variant: str | None) -> dict[str, str]:
    """Export file name -> bundled file name, for the default model or a variant."""
    return VARIANTS[variant] if variant else BUNDLE


def _targets(variant: str | None) -> list[Path]:
    return [MODELS / name for name in _files(variant).values()]


def bundle(run: Path, model_name: str = MODEL_NAME, recipe: str = RECIPE, variant: str | None = None) -> None:
    for source_name, target_name in _files(variant).items():
        source = run / "export" / source_name
        content = source.read_bytes()
        metadata = read_metadata(content)
        metadata["name"] = f"marsedge-bundled-{variant + '-' if variant else ''}{metadata['precision']}"
        metadata["bundled_from"] = str(source)
        metadata.update(model_name=model_name, recipe=recipe)
        if (run / "interpolation.json").is_file():  # a run tools/interpolate_weights.py mixed
            mix = json.loads((run / "interpolation.json").read_text())
            metadata["interpolation"] = {**mix, "start": Path(mix["start"]).name}
        if (run / "mix.json").is_file():  # a run that mixed its weights itself (mix_alpha)
            mix = json.loads((run / "mix.json").read_text())
            metadata["interpolation"] = {**mix, "partner": Path(mix["partner"]).name}
        _write(MODELS / target_name, content, metadata, str(source))
    if variant is None:
        print(
            "the default's route for degraded frames is not carried over: python tools/bundle_model.py --stamp-route robust"
        )
    elif variant == "robust":
        print(
            "the default routes degraded frames to these files by sha256: python tools/bundle_model.py --stamp-route robust"
        )


def stamp_names(model_name: str, recipe: str, variant: str | None = None) -> None:
    """Adds ``model_name`` and ``recipe`` to the bundled files' metadata, nothing else."""
    for target in _targets(variant):
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        _write(target, content, {**read_metadata(content), "model_name": model_name, "recipe": recipe}, str(target))
        if _strip_archive(target.read_bytes()) != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed")


def stamp_split(config_path: Path, variant: str | None = None) -> None:
    from marsedge.core.metrics import score
    from marsedge.edge_runtime.tile_model import TileModel
    from marsedge.train import rundir, trainer
    from marsedge.train.config import TrainConfig

    config = TrainConfig.load(config_path)
    tiles, split, derived, data_hash = trainer.compute_split(config)
    reference = next(target for target in _targets(variant) if "float32" in target.name)
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
    for target in _targets(variant):
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        stamped = {**read_metadata(content), "source_split": fingerprint, "split": recipe}
        _write(target, content, stamped, str(target))
        if _strip_archive(target.read_bytes()) != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed")


def restamp_bundled(model_pixels_per_frame: float, variant: str | None = None) -> None:
    for target in _targets(variant):
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        _write(target, content, restamp(read_metadata(content), model_pixels_per_frame), str(target))
        after = _strip_archive(target.read_bytes())
        before_sha, after_sha = (hashlib.sha256(b).hexdigest() for b in (flatbuffer, after))
        if after != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed ({before_sha} -> {after_sha})")
        print(f"{target.name}: flatbuffer sha256 {after_sha} unchanged")


def calibrate_bundled(variant: str | None = None, data_dir: Path | None = None) -> None:
    from marsedge.core.calibration import calibrate_tiles
    from marsedge.datapaths import SHARED_DATA
    from marsedge.edge_runtime.tile_model import TileModel
    from marsedge.evaluation.evaluate import recipe_split

    folder = data_dir or SHARED_DATA
    for target in _targets(variant):
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        model = TileModel(content)
        metadata = model.metadata
        tiles, split = recipe_split(metadata, folder / metadata["split"]["data_file"])
        val = tiles.subset(split["val"])
        _, calibration = calibrate_tiles(model.float_logits, model.output_classes, val.images, val.masks)
        print(f"{target.name}: {len(val)} val tiles, {json.dumps(calibration)}")
        _write(target, content, {**metadata, "calibration": calibration}, str(target))
        after = _strip_archive(target.read_bytes())
        if after != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed")
        print(f"{target.name}: flatbuffer sha256 {hashlib.sha256(after).hexdigest()} unchanged")


def stamp_route(variant: str, max_noise: float, min_sharpness: float) -> None:
    """Adds ``degraded_route`` to the default's files' metadata, nothing else: each file's
    partner is the variant's file of the same precision."""
    for export_name, target_name in BUNDLE.items():
        target, partner = MODELS / target_name, MODELS / VARIANTS[variant][export_name]
        route = {
            "model": partner.name,
            "sha256": hashlib.sha256(partner.read_bytes()).hexdigest(),
            "max_noise": max_noise,
            "min_sharpness": min_sharpness,
        }
        content = target.read_bytes()
        flatbuffer = _strip_archive(content)
        _write(target, content, {**read_metadata(content), "degraded_route": route}, str(target))
        if _strip_archive(target.read_bytes()) != flatbuffer:
            raise SystemExit(f"{target}: flatbuffer changed")
        print(f"{target.name}: degraded frames -> {json.dumps(route)}")


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
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="the variant's files, not the default model's")
    parser.add_argument("--calibrate", action="store_true", help="fit and stamp the softmax temperature on val")
    parser.add_argument("--data", type=Path, help="with --calibrate: the folder holding the models' data")
    parser.add_argument(
        "--stamp-route",
        choices=["robust"],  # a partner takes the default's input: the tile model's 64x128 does not
        metavar="VARIANT",
        help="route the default's degraded frames to VARIANT's file of each precision (robust)",
    )
    parser.add_argument("--max-noise", type=float, default=1.55, help="with --stamp-route: grey levels of noise")
    parser.add_argument("--min-sharpness", type=float, default=0.675, help="with --stamp-route: Laplacian ratio")
    args = parser.parse_args()
    if args.calibrate:
        calibrate_bundled(args.variant, args.data)
    elif args.stamp_route:
        stamp_route(args.stamp_route, args.max_noise, args.min_sharpness)
    elif args.stamp_names:
        stamp_names(*args.stamp_names, args.variant)
    elif args.stamp_split:
        stamp_split(args.stamp_split, args.variant)
    elif args.restamp:
        restamp_bundled(args.model_pixels_per_frame, args.variant)
    elif args.run:
        bundle(args.run, args.name, args.recipe, args.variant)
    else:
        parser.error(
            "give a run directory, --stamp-names NAME RECIPE, --stamp-split CONFIG, --restamp, --calibrate "
            "or --stamp-route VARIANT"
        )


if __name__ == "__main__":
    main()

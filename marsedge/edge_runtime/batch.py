"""A batch of image files: expanding inputs and segmenting each file into its outputs."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    confidence_png,
    decode_frame,
    load_frame,
    mask_png,
    overlay_png,
    write_atomic,
)
from .segmenter import Segmenter

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputProblem:
    """An INPUT argument that yields no image: the argument and why."""

    source: str
    message: str
    notice: bool = False  # worth saying, not a failure (images skipped in subfolders)


def expand_inputs(inputs: Iterable[str], recursive: bool = False) -> tuple[list[Path], list[InputProblem]]:
    """Turns INPUT arguments (files, directories, globs) into image paths, in order.

    A named file is always tried (a non-image fails later with a clear message); a
    directory contributes its PNG/JPEG files, and with ``recursive`` those of its
    subfolders too (without, images found in subfolders are reported as a notice); a glob
    contributes what it matches, directories expanded the same way. Paths are listed once.
    """
    paths: list[Path] = []
    problems: list[InputProblem] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)  # never raises, even on symlink loops
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for source in inputs:
        if os.path.isdir(source):
            images = _images_in(Path(source), recursive)
            nested = 0 if recursive else _images_below(Path(source))
            if nested:
                problems.append(
                    InputProblem(
                        source,
                        f"{nested} image(s) in subfolders not segmented (add --recursive to include them)",
                        notice=True,
                    )
                )
            if not images:
                problems.append(InputProblem(source, "directory has no PNG or JPEG images"))
            for image in images:
                add(image)
        elif os.path.lexists(source) or not _GLOB_CHARS & set(source):
            add(Path(source))  # a missing file fails with a clear message when loaded
        else:
            matches = sorted(glob.glob(source, recursive=True))
            if not matches:
                problems.append(InputProblem(source, "no files match this pattern"))
            for match in matches:
                for image in _images_in(Path(match), recursive) if os.path.isdir(match) else [Path(match)]:
                    add(image)
    return paths, problems


def unique_stem(path: str | os.PathLike[str], used: set[str]) -> str:
    """``path``'s file stem, made unique among ``used`` (``x``, ``x-2``, ``x-3``...);
    ``used`` is not changed. The one naming rule of batch and watch outputs."""
    base = Path(path).stem
    stem, n = base, 1
    while stem in used:
        n += 1
        stem = f"{base}-{n}"
    return stem


def output_stem(path: Path, used: set[str]) -> str:
    """The file stem for ``path``'s outputs, made unique within one batch and added to ``used``."""
    stem = unique_stem(path, used)
    used.add(stem)
    return stem


def segment_file(
    segmenter: Segmenter,
    path: Path,
    out_dir: Path,
    stem: str,
    overlay: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
    confidence: bool = False,
) -> dict[str, Any]:
    """Segments one image file and writes ``<stem>_mask.png``, ``<stem>_overlay.png``,
    ``<stem>_confidence.png`` (with ``confidence``: uint8 grey, 255 = 1.0) and
    ``<stem>.json`` into ``out_dir``; returns the JSON record.

    ``data``, when given, is the file's contents already read (a cluster job reading from
    an object store): it is decoded instead of reading ``path``, which then only names it.

    Each file is written atomically, the record last; if any write fails, the outputs
    already written for this image are removed, so an image has all its outputs or none.

    Raises:
        ImageError: the image cannot be read or used.
        OSError: an output cannot be written.
    """
    start = time.perf_counter()
    if data is None:
        frame = load_frame(path, max_pixels=max_pixels, work_pixels=segmenter.work_pixels)
    else:
        frame = decode_frame(data, str(path), max_pixels=max_pixels, work_pixels=segmenter.work_pixels)
    gray, bit_depth = segmenter.to_gray8(frame)
    del frame
    load_ms = (time.perf_counter() - start) * 1e3
    result = segmenter.segment(gray)

    tick = time.perf_counter()
    outputs: dict[str, bytes] = {f"{stem}_mask.png": mask_png(result.mask, result.classes)}
    if overlay:
        shown = segmenter.metadata["output_classes"]
        outputs[f"{stem}_overlay.png"] = overlay_png(gray, result.mask, result.classes, result.class_fractions, shown)
    if confidence:
        outputs[f"{stem}_confidence.png"] = confidence_png(result.confidence)
    latency = {"load": load_ms, **result.timings}
    record: dict[str, Any] = {
        "input": str(path),
        "size": {"width": int(gray.shape[1]), "height": int(gray.shape[0])},
        "class_fractions": {name: round(value, 6) for name, value in result.class_fractions.items()},
        "latency_ms": {},
        "tiles": result.tiles,
        # the resize used: model pixels per input pixel, and the model's field of view
        "model_pixels_per_frame": segmenter.field_of_view.model_pixels_per_frame,
        "scale": round(result.scale, 9),
        "bit_depth": bit_depth,
        "confidence": {
            "mean": round(result.mean_confidence, 6),
            "threshold": result.confidence_threshold,
            "below_threshold": round(result.below_threshold, 6),
        },
        "ignored_fraction": round(result.ignored_fraction, 6),
        "model": segmenter.model_info,
        # what decides the mask: a frame whose record holds other settings is not done (batch, watch)
        "mask_settings": segmenter.mask_settings(),
        "outputs": {
            "mask": str(out_dir / f"{stem}_mask.png"),
            "overlay": str(out_dir / f"{stem}_overlay.png") if overlay else None,
            "json": str(out_dir / f"{stem}.json"),
        },
    }
    if confidence:
        record["outputs"]["confidence"] = str(out_dir / f"{stem}_confidence.png")
    stale = _stale_outputs(out_dir, stem, record["mask_settings"], outputs)
    written: list[Path] = []
    try:
        for name, data in outputs.items():
            write_atomic(out_dir / name, data)
            written.append(out_dir / name)
        latency["write"] = (time.perf_counter() - tick) * 1e3
        latency["total"] = sum(latency.values())
        record["latency_ms"] = {stage: round(ms, 3) for stage, ms in latency.items()}
        write_atomic(out_dir / f"{stem}.json", (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    except BaseException:
        for done in written:
            with suppress(OSError):
                done.unlink()
        raise
    for path in stale:
        with suppress(OSError):
            path.unlink()
    return record


def _stale_outputs(out_dir: Path, stem: str, settings: dict[str, Any], outputs: dict[str, bytes]) -> list[Path]:
    """The overlay or confidence map an earlier record of ``stem`` left that this run does
    not rewrite, when that record was made under other mask settings (another model):
    removed once the new outputs are in place, so no file shows another model's result."""
    try:
        earlier = json.loads((out_dir / f"{stem}.json").read_text(encoding="utf-8"))
        if earlier.get("mask_settings") == settings:
            return []
    except (OSError, ValueError, AttributeError):
        return []
    optional = (f"{stem}_overlay.png", f"{stem}_confidence.png")
    return [out_dir / name for name in optional if name not in outputs and (out_dir / name).exists()]


def settings_digest(settings: dict[str, Any] | None) -> str:
    """A short digest of :meth:`.Segmenter.mask_settings` (what a watch journal keeps)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def summary(latencies_ms: Sequence[float], failures: int) -> str:
    """One line: images segmented, failures, and mean ms/image and FPS over the segmented
    ones (left out when none was segmented: there is no speed to report)."""
    images = "image" if len(latencies_ms) == 1 else "images"
    noun = "failure" if failures == 1 else "failures"
    line = f"{len(latencies_ms)} {images} segmented, {failures} {noun}"
    if not latencies_ms:
        return line
    mean = sum(latencies_ms) / len(latencies_ms)
    fps = f"{1000.0 / mean:.1f}" if mean > 0 else "n/a"
    return f"{line}, mean {mean:.1f} ms/image, {fps} FPS"


def _images_in(directory: Path, recursive: bool = False) -> list[Path]:
    """PNG/JPEG files of ``directory`` (and its subfolders with ``recursive``), sorted."""
    try:
        entries = sorted(directory.rglob("*") if recursive else directory.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]


def _images_below(directory: Path, limit: int = 100_000) -> int:
    """How many PNG/JPEG files the subfolders of ``directory`` hold (counting stops at ``limit``)."""
    count = 0
    try:
        for sub in (p for p in directory.iterdir() if p.is_dir()):
            for path in sub.rglob("*"):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    count += 1
                    if count >= limit:
                        return count
    except OSError:
        pass
    return count

"""A batch of frames: expanding inputs and segmenting each frame into its outputs."""

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

import numpy as np

from .imageio import DEFAULT_MAX_PIXELS, confidence_png, mask_png, overlay_png, write_atomic
from .segmenter import Segmentation, Segmenter
from .sources import SourceOptions, frame_stem, is_bag, is_frame_file, read_frame

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputProblem:
    """An INPUT argument that yields no image: the argument and why."""

    source: str
    message: str
    notice: bool = False  # worth saying, not a failure (images skipped in subfolders)


def expand_inputs(inputs: Iterable[str], recursive: bool = False) -> tuple[list[Path], list[InputProblem]]:
    """Turns INPUT arguments (files, directories, globs) into image paths, in order.

    A named file is always tried (a non-image fails later with a clear message); a bag
    (a directory with ``metadata.yaml``) is one input; a directory contributes its frame
    files (PNG/JPEG, PDS products, bag files), and with ``recursive`` those of its
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
        if os.path.isdir(source) and is_bag(source):
            add(Path(source))
        elif os.path.isdir(source):
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
    """``path``'s stem (a PDS product's id, else the file stem), made unique among ``used``
    (``x``, ``x-2``, ``x-3``...); ``used`` is not changed. The one naming rule of batch and
    watch outputs."""
    return unique_name(frame_stem(path), used)


def unique_name(base: str, used: set[str]) -> str:
    """``base`` made unique among ``used`` as :func:`unique_stem` does (a bag message's stamp)."""
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
    source: SourceOptions | None = None,
    confidence: bool = False,
) -> dict[str, Any]:
    """Segments one frame file (PNG/JPEG or PDS product) and writes ``<stem>_mask.png``,
    ``<stem>_overlay.png``, ``<stem>_confidence.png`` (with ``confidence``: uint8 grey,
    255 = 1.0) and
    ``<stem>.json`` into ``out_dir``; returns the JSON record.

    ``data``, when given, is the file's contents already read (a cluster job reading from
    an object store): it is decoded instead of reading ``path``, which then only names it.
    ``source`` says how to read archive files (``band``). A PDS product's record also
    carries its identity under ``"source"`` (product id, instrument, sol, spacecraft clock).

    Each file is written atomically, the record last; if any write fails, the outputs
    already written for this image are removed, so an image has all its outputs or none.

    Raises:
        ImageError: the image cannot be read or used.
        OSError: an output cannot be written.
    """
    start = time.perf_counter()
    frame = read_frame(path, data, max_pixels, segmenter.work_pixels, source)
    gray, depth = frame_gray(segmenter, frame.levels, frame.declared_bits)
    identity = frame.identity
    del frame
    load_ms = (time.perf_counter() - start) * 1e3
    result = segmenter.segment(gray)
    return write_outputs(
        segmenter, gray, result, str(path), out_dir, stem, overlay, load_ms, identity, confidence, depth
    )


def frame_gray(
    segmenter: Segmenter, levels: np.ndarray, declared_bits: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """A frame's levels as the model's 8-bit grey (:meth:`.Segmenter.to_gray8`: the
    options' bit depth, a label's declared bits under ``auto``) and the record fields
    saying how: ``bit_depth``, and ``bit_depth_from: "label"`` when the label decided.

    Raises:
        ImageError: levels above a given bit depth, or not an image.
    """
    gray, depth = segmenter.to_gray8(levels, declared_bits)
    fields: dict[str, Any] = {"bit_depth": depth}
    if declared_bits and levels.dtype == np.uint16 and segmenter.options.bit_depth == "auto":
        fields["bit_depth_from"] = "label"
    return gray, fields


def write_outputs(
    segmenter: Segmenter,
    gray: np.ndarray,
    result: Segmentation,
    name: str,
    out_dir: Path,
    stem: str,
    overlay: bool = True,
    load_ms: float = 0.0,
    identity: dict[str, Any] | None = None,
    confidence: bool = False,
    depth: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes a segmented frame's ``<stem>_mask.png``, ``<stem>_overlay.png``,
    ``<stem>_confidence.png`` (with ``confidence``) and ``<stem>.json`` (``name`` as its
    ``"input"``, ``identity`` as its ``"source"``, ``depth`` the bit-depth fields of
    :func:`frame_gray`; without, the result's) as :func:`segment_file` does, and returns
    the record.

    Raises:
        OSError: an output cannot be written (those already written are removed).
    """
    tick = time.perf_counter()
    outputs: dict[str, bytes] = {f"{stem}_mask.png": mask_png(result.mask, result.classes)}
    if overlay:
        shown = segmenter.metadata["output_classes"]
        outputs[f"{stem}_overlay.png"] = overlay_png(gray, result.mask, result.classes, result.class_fractions, shown)
    if confidence:
        outputs[f"{stem}_confidence.png"] = confidence_png(result.confidence)
    latency = {"load": load_ms, **result.timings}
    record: dict[str, Any] = {
        "input": name,
        "size": {"width": int(gray.shape[1]), "height": int(gray.shape[0])},
        "class_fractions": {name: round(value, 6) for name, value in result.class_fractions.items()},
        "latency_ms": {},
        "tiles": result.tiles,
        # the resize used: model pixels per input pixel, and the model's field of view
        "model_pixels_per_frame": segmenter.field_of_view.model_pixels_per_frame,
        "scale": round(result.scale, 9),
        **(depth or {"bit_depth": result.bit_depth}),
        "confidence": {
            "mean": round(result.mean_confidence, 6),
            "threshold": result.confidence_threshold,
            "below_threshold": round(result.below_threshold, 6),
        },
        "ignored_fraction": round(result.ignored_fraction, 6),
        # noise and sharpness as the model saw the frame; degraded: the route's partner segmented it
        "quality": result.quality,
        "degraded": result.degraded,
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
    if identity:
        record["source"] = identity
    stale = _stale_outputs(out_dir, stem, record["mask_settings"], outputs)
    written: list[Path] = []
    try:
        for filename, content in outputs.items():
            write_atomic(out_dir / filename, content)
            written.append(out_dir / filename)
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
    """Frame files of ``directory`` (and its subfolders with ``recursive``), sorted; bags
    met on the way (directories with ``metadata.yaml``) are taken whole."""
    try:
        entries = sorted(directory.rglob("*") if recursive else directory.iterdir())
    except OSError:
        return []
    bags = [p for p in entries if p.is_dir() and is_bag(p)] if recursive else []
    return sorted(
        [p for p in entries if is_frame_file(p) and not any(b in p.parents for b in bags)] + bags,
    )


def _images_below(directory: Path, limit: int = 100_000) -> int:
    """How many PNG/JPEG files the subfolders of ``directory`` hold (counting stops at ``limit``)."""
    count = 0
    try:
        for sub in (p for p in directory.iterdir() if p.is_dir()):
            for path in sub.rglob("*"):
                if is_frame_file(path):
                    count += 1
                    if count >= limit:
                        return count
    except OSError:
        pass
    return count

"""The figures of record: every number the documents quote about the bundled models, in one
generated file (``docs/figures.json``), one entry per bundled model name.

    python -m marsedge.benchmarks.figures                      # every bundled model (make figures)
    python -m marsedge.benchmarks.figures --models navcam      # one entry, merged into the record
    python -m marsedge.benchmarks.figures --docs-only          # the documents' figures from the record

Each entry is measured from the model's files alone (the int8 file and its float32 sibling,
when one ships), with the shared data in place:

- ``tiles_test``: its test split at the model's resolution, as ``marsedge eval MODEL`` and
  ``marsedge bench`` score it;
- ``frames_test``: every whole test frame (256x256) through the runtime, mask scored at the
  frame's size: the clean row of ``marsedge eval MODEL --corruptions``;
- ``corruptions``: the corruption benchmark on 200 of those frames;
- ``speed``: ``marsedge bench``'s latency per model input and per 1024x1024 frame, peak
  memory, GMAC/s; ``files``: size, MACs and sha256; ``machine``: what measured it;
- ``calibration``: the temperature and ``marsedge eval``'s calibration figures (ECE, share
  and accuracy of the pixels at confidence >= 0.9) on the val and test splits.

The documents quote the record in two ways, both rewritten by ``--docs-only`` (and after
every measurement) and checked by ``tests/test_figures.py``: generated sections between
``<!-- figures: NAME, begin -->`` and ``<!-- figures: NAME, end -->`` (tables, see
:data:`SECTIONS`), and single figures in running text written as
``<!--fig:EXPR|FORMAT-->VALUE<!--/fig-->``, where EXPR is a key path into the record
(``navcam.frames_test.int8.mean_iou``) or arithmetic over such paths, and FORMAT a Python
format spec (``.3f``, ``.0%``, ``s``). A bundled file whose sha256 differs from its entry's
fails the test too, so a changed model cannot keep its old figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from marsedge import __version__

logger = logging.getLogger(__name__)

SCHEMA = "marsedge-figures/1"
REPO_ROOT = Path(__file__).resolve().parents[2]
RECORD = REPO_ROOT / "docs" / "figures.json"
DOCUMENTS = ("README.md", "MODEL_CARD.md", "BENCHMARKS.md", "docs/*.md")
CORRUPTION_FRAMES = 200
THREADS = (1, 2)
CLASSES = ("soil", "bedrock", "sand", "big_rock")
PRECISIONS = {"int8-qat": "int8", "int8-ptq": "int8", "float32": "float32"}


def bundled_models() -> dict[str, Path]:
    """The bundled models by name, the default first (``marsedge-run --model NAME``)."""
    from marsedge.edge_runtime.segmenter import BUNDLED_MODELS

    return dict(BUNDLED_MODELS)


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flatbuffer_sha256(path: str | Path) -> str:
    """The SHA-256 of a model's flatbuffer, without the metadata archive appended to it: the
    network the figures measure (a metadata restamp keeps it)."""
    from marsedge.core.metadata import _strip_archive

    return hashlib.sha256(_strip_archive(Path(path).read_bytes())).hexdigest()


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it (the record and the
    commands it quotes name no machine's folders)."""
    relative = Path(os.path.relpath(path))
    return path if relative.parts and relative.parts[0] == ".." else relative


def level_key(corruption: str, level: float) -> str:
    """``("blur", 0.5)`` -> ``"blur_0p5"``: a record key without the dot of a key path."""
    return f"{corruption}_{level:g}".replace(".", "p")


def cpu_summary(machine: dict[str, Any]) -> str:
    """``"2-core AMD EPYC with AVX-512 VNNI"``: cores, CPU and its int8 dot-product instructions."""
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.partition(":")[2].split())
                break
    except OSError:
        pass
    if "avx512_vnni" in flags:
        extra = " with AVX-512 VNNI"
    elif "avx_vnni" in flags:
        extra = " with AVX-VNNI"
    elif "asimddp" in flags:
        extra = " with Arm dot product (sdot)"
    elif "avx2" in flags:
        extra = " with AVX2, no int8 dot product"
    else:
        extra = ""
    return f"{machine.get('usable_cpus')}-core {machine.get('cpu')}{extra}"


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _summary(table: dict[str, Any]) -> dict[str, Any]:
    clean = table["clean"]
    out = {"mean_iou": _r(clean["mean_iou"])}
    out.update({name: _r(clean["class_iou"][name]) for name in CLASSES})
    for key in ("big_rock_precision", "big_rock_recall"):
        out[key] = _r(clean.get(key))
    return out


def _corruption_entry(table: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"clean": _summary(table)}
    for row in table["rows"]:
        entry[level_key(row["corruption"], row["level"])] = {
            "mean_iou": _r(row["mean_iou"]),
            "share": _r(row["share"]),
            "severity": row["severity"],
        }
    entry["middle_min_share"] = _r(table["middle_min_share"])
    entry["worst_min_share"] = _r(table["worst_min_share"])
    return entry


def _calibration(path: str | Path, data: Path) -> dict[str, Any]:
    """``marsedge eval FILE``'s calibration figures on the val and test splits (model resolution)."""
    from marsedge.evaluation.evaluate import evaluate as run_evaluation

    out: dict[str, Any] = {}
    for split in ("val", "test"):
        report = run_evaluation(path, data, split)["calibration"]
        after, before = report["calibrated"], report["uncalibrated"]
        out["temperature"] = round(report["temperature"], 4)
        out[split] = {
            "ece": _r(after["ece"]),
            "ece_t1": _r(before["ece"]),
            "trusted_share": _r(after["trusted_share"]),
            "trusted_accuracy": _r(after["trusted_accuracy"]),
            "bins": after.get("bins"),
        }
    return out


def _speed_entry(record: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for speed in record.get("speed") or []:
        entry[f"t{speed['threads']}"] = {
            "ms_input": speed["tile_ms"]["p50"],
            "ms_infer": speed["infer_ms"]["p50"],
            "ms_frame_1024": None if speed["frame_ms"] is None else round(speed["frame_ms"]["mean"], 2),
            "fps_1024": speed["fps"],
            "gmacs": speed["gmacs"],
            "peak_fraction": speed["peak_fraction"],
            "speedup_vs_float32": speed["speedup_vs_float32"],
        }
    rss = record.get("rss") or {}
    entry["rss_mb"] = rss.get("peak_mb")
    return entry


def measure(
    name: str,
    path: Path,
    data_root: Path,
    corruption_frames: int = CORRUPTION_FRAMES,
    progress: Callable[[str], None] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record entry of one bundled model (``path``: its int8 file): see the module docstring.

    With ``previous`` (the model's entry so far) only speed, memory and sizes are measured
    again; accuracy and the corruption benchmark are kept (``--speed-only``: a quieter
    machine, or every model's timings in one sitting).

    Raises:
        MarsEdgeError: the shared data is absent or not the data the model was trained on.
    """
    from marsedge.benchmarks import corruptions
    from marsedge.benchmarks.bench import run_bench
    from marsedge.benchmarks.machine import describe_machine
    from marsedge.benchmarks.settings import BenchSettings
    from marsedge.core.metadata import read_metadata
    from marsedge.errors import DataError

    say = progress or (lambda text: None)
    started = datetime.now(timezone.utc)
    machine = describe_machine()
    files = {  # {"int8-qat": int8 file, "float32": sibling}, as the command line would name them
        label: _shown(file) for label, file in corruptions.precision_models(path).items()
    }
    recipe = read_metadata(path).get("split") or {}
    data = data_root / str(recipe.get("data_file", ""))
    frames_root = data_root / "ai4mars-msl-256"
    for needed in (data, frames_root):
        if not recipe.get("data_file") or not needed.exists():
            raise DataError(f"{needed}: absent; the figures of {name} need the shared data (--data-root)")
    sources = tuple(str(p) for p in files.values())
    settings = BenchSettings(
        sources=sources,
        default_data=str(data),
        split="test",
        threads=THREADS,
        keras=False,
        corruption_frames=0 if previous else corruption_frames,
        frames_data=str(frames_root),
    )
    say(f"{name}: marsedge bench {' '.join(Path(s).name for s in sources)}")
    bench = run_bench(settings, lambda done, total, message: say(f"{name}: bench {done}/{total} {message}")).report
    if previous:
        bench["corruptions"] = previous["bench"].get("corruptions")
        whole = None
    else:
        say(f"{name}: every whole test frame")
        positions = corruptions.select_frames(path, frames_root, "test")
        whole = corruptions.corruption_report(files, frames_root, positions, threads=max(THREADS), names=())

    entry: dict[str, Any] = {
        "created": started.isoformat(timespec="seconds"),
        "marsedge_version": __version__,
        "command": f"python -m marsedge.benchmarks.figures --models {name}",
        "machine": {**machine, "summary": cpu_summary(machine)},
        "default_file": Path(path).name,
        "files": {},
        "tiles_test": {"data": str(data), "split": bench["settings"]["split"], "count": bench["settings"]["tiles"]},
        "frames_test": {"data": str(frames_root), "frames": whole["frames"] if whole else None},
        "corruptions": {"data": str(frames_root), "frames": None, "seed": None},
        "speed": {},
        "bench": bench,
    }
    for record in bench["models"]:
        key = PRECISIONS.get(record["format"], record["format"])
        entry["files"][key] = {
            "file": Path(record["path"]).name,
            "precision": record["format"],
            "sha256": sha256(record["path"]),
            "flatbuffer_sha256": flatbuffer_sha256(record["path"]),
            "size_kb": record["size_kb"],
            "macs": record["macs_per_tile"],
            "inputs_1024": inputs_per_1024_frame(Path(record["path"])),
        }
        accuracy = record["accuracy"]
        entry["tiles_test"][key] = {
            "mean_iou": accuracy["mean_iou"],
            **{c: accuracy["class_iou"][c] for c in CLASSES},
            "agree": accuracy["pixel_agreement"],
        }
        entry["speed"][key] = _speed_entry(record)
    entry["calibration"] = {}
    for record in bench["models"]:
        key = PRECISIONS.get(record["format"], record["format"])
        say(f"{name}: calibration of {key} on val and test")
        entry["calibration"][key] = _calibration(record["path"], data)
    if previous:
        for part in ("tiles_test", "frames_test", "corruptions"):
            entry[part] = previous[part]
        entry["accuracy_created"] = previous.get("accuracy_created", previous["created"])
        entry["command"] += " --speed-only"
        return entry
    for label, table in whole["tables"].items():
        entry["frames_test"][PRECISIONS.get(label, label)] = _summary(table)
    section = bench.get("corruptions")
    if section:
        entry["corruptions"].update(frames=section["frames"], seed=section["seed"])
        for label, table in section["tables"].items():
            entry["corruptions"][PRECISIONS.get(label, label)] = _corruption_entry(table)
    return entry


def read_record(path: str | Path = RECORD) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        return {"schema": SCHEMA, "models": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def write_record(record: dict[str, Any], path: str | Path = RECORD) -> None:
    from marsedge.core.atomic import write_bytes

    order = list(bundled_models())
    models = record["models"]
    record["models"] = {k: models[k] for k in sorted(models, key=lambda k: (order.index(k) if k in order else 99, k))}
    write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())


# ---- looking figures up ------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z][\w-]*(?:\.[\w-]+)+")


def lookup(record: dict[str, Any], key: str) -> Any:
    """``"navcam.frames_test.int8.mean_iou"`` -> that value of the record's models
    (``scale.*``: the record's throughput section; ``pi4.*``: the Pi 4 estimate's constants).

    Raises:
        KeyError: no such figure.
    """
    parts = key.split(".")
    value: Any = record if parts[0] == "scale" else {"pi4": PI4} if parts[0] == "pi4" else record["models"]
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{key}: no such figure in the record (at {part!r})")
        value = value[part]
    return value


def evaluate(record: dict[str, Any], expression: str) -> Any:
    """A key path, or arithmetic over key paths (``(a.b - c.d) * 100``); operators need spaces."""
    names: dict[str, Any] = {}

    def substitute(match: re.Match) -> str:
        name = f"_v{len(names)}"
        names[name] = lookup(record, match.group(0))
        return name

    code = _KEY.sub(substitute, expression)
    if code.strip() in names:
        return names[code.strip()]
    return eval(code, {"__builtins__": {}, "abs": abs, "round": round}, names)  # noqa: S307 (our own docs)


def formatted(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    if spec.endswith("%") and spec.startswith(".") and spec[1:-1].isdigit():
        return f"{value:{spec}}"[:-1] + "%"
    return format(value, spec)


INLINE = re.compile(r"<!--fig:(?P<expr>[^|>]+)\|(?P<spec>[^>]*?)-->(?P<value>.*?)<!--/fig-->")


def rewrite_inline(text: str, record: dict[str, Any]) -> str:
    """Every ``<!--fig:EXPR|SPEC-->VALUE<!--/fig-->`` of ``text`` with VALUE from the record."""

    def replace(match: re.Match) -> str:
        value = formatted(evaluate(record, match.group("expr")), match.group("spec"))
        return f"<!--fig:{match.group('expr')}|{match.group('spec')}-->{value}<!--/fig-->"

    return INLINE.sub(replace, text)


def stale_inline(text: str, record: dict[str, Any]) -> list[str]:
    """``"EXPR: VALUE, record SPEC"`` for each inline figure that disagrees with the record."""
    wrong = []
    for match in INLINE.finditer(text):
        try:
            expected = formatted(evaluate(record, match.group("expr")), match.group("spec"))
        except (KeyError, TypeError, ValueError, NameError, SyntaxError) as exc:
            wrong.append(f"{match.group('expr')}: {exc}")
            continue
        if match.group("value") != expected:
            wrong.append(f"{match.group('expr')}: the text says {match.group('value')}, the record {expected}")
    return wrong


# ---- generated sections ------------------------------------------------------------------


def _entries(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The entries of the models bundled now, in their order (an entry of a model no longer
    bundled stays in the record but out of the tables)."""
    return [(name, record["models"][name]) for name in bundled_models() if name in record["models"]]


def _models_with(record: dict[str, Any], part: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, entry) for name, entry in _entries(record) if entry.get(part)]


def same_files(entry: dict[str, Any], path: Path) -> bool:
    """Whether ``entry`` measured the very files of the bundled model at ``path`` (its int8
    file; the float32 sibling too when the entry has one): same flatbuffers."""
    files = entry.get("files") or {}
    if not files or entry.get("default_file") != path.name:
        return False
    for file in files.values():
        bundled = path.with_name(file["file"])
        if not bundled.is_file() or flatbuffer_sha256(bundled) != file.get("flatbuffer_sha256"):
            return False
    return True


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _iou(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _default_name(record: dict[str, Any]) -> str:
    return next(iter(bundled_models()))


def _label(name: str, record: dict[str, Any]) -> str:
    return f"`{name}` (default)" if name == _default_name(record) else f"`{name}`"


# Raspberry Pi 4 estimate (MODEL_CARD.md, "Speed and size"; docs/pi.md): the network at
# this network's share of a Cortex-A72's float32 NEON peak, 10 GMAC/s a core, int8 1.5x
# that without `sdot`, 3.2x for 4 threads; the rest of the frame's call (resize, mask) at
# 4x its time on the x86 core that measured it, 1 thread.
# The docs' expressions read these as ``pi4.*`` (``pi4.gmacs_4_threads.int8``, ``pi4.slowdown``).
PI4 = {"gmacs_core": 10.0, "int8_gain": 1.5, "threads_gain": 3.2, "slowdown": 4.0}
PI4["gmacs_4_threads"] = {
    "int8": PI4["gmacs_core"] * PI4["int8_gain"] * PI4["threads_gain"],
    "float32": PI4["gmacs_core"] * PI4["threads_gain"],
}


def inputs_per_1024_frame(path: Path) -> int:
    """Network calls a 1024x1024 frame takes with the model file at ``path``."""
    from marsedge.edge_runtime.segmenter import Segmenter

    return Segmenter(path, threads=1).inputs_per_frame(1024, 1024)


def pi4_estimate_ms(file: dict[str, Any], speed: dict[str, Any], key: str) -> float | None:
    """ms per 1024x1024 frame on a Raspberry Pi 4, 4 threads, estimated from MACs and x86 times."""
    one = speed.get("t1") or {}
    if not file.get("macs") or one.get("ms_frame_1024") is None:
        return None
    inputs = file.get("inputs_1024") or 1
    rest = max(one["ms_frame_1024"] - inputs * one["ms_input"], 0.0)
    return inputs * file["macs"] / 1e6 / PI4["gmacs_4_threads"][key] + PI4["slowdown"] * rest


def _bundled_files(record: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """``(name, precision, file entry, speed entry)`` of every bundled file, int8 before float32."""
    return [
        (name, key, entry["files"][key], entry["speed"][key])
        for name, entry in _entries(record)
        for key in ("int8", "float32")
        if key in entry["files"]
    ]


def _per_thread(speed: dict[str, Any], field: str, spec: str) -> str:
    """``speed``'s ``field`` at each of THREADS, "a / b"."""
    return " / ".join(format(speed[f"t{t}"][field], spec) for t in THREADS)


def readme_models(record: dict[str, Any]) -> str:
    """README: one row per bundled file: size, whole-frame test mIoU, big rock, ms, Pi 4, RSS."""
    lines = [
        "| model (`--model`), file | size | test mIoU, whole frames | big rock IoU (precision / recall) "
        "| ms per 1024 frame, 1 / 2 threads | Raspberry Pi 4 estimate, 4 threads | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, key, file, speed in _bundled_files(record):
        test = record["models"][name]["frames_test"][key]
        cells = [
            f"{_label(name, record)} {key}, `{file['file']}`",
            f"{file['size_kb']:,.0f} KB",
            _iou(test["mean_iou"]),
            f"{_iou(test['big_rock'])} ({_iou(test['big_rock_precision'])} / {_iou(test['big_rock_recall'])})",
            _per_thread(speed, "ms_frame_1024", ".0f"),
            f"~{pi4:.0f} ms" if (pi4 := pi4_estimate_ms(file, speed, key)) is not None else "",
            f"{speed['rss_mb']:.0f} MB" if speed.get("rss_mb") else "",
        ]
        if name == _default_name(record) and key == "int8":
            cells = [cells[0]] + [f"**{c}**" if c else c for c in cells[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def frames_note(record: dict[str, Any]) -> str:
    models = record["models"]
    default = models.get(_default_name(record)) or next(iter(models.values()))  # a record of some models only
    return textwrap.fill(
        f"Test mIoU and big rock: all {default['frames_test']['frames']} whole test frames at their "
        "256x256 size through the runtime, mask scored at the frame's size (the clean row of "
        "`marsedge eval MODEL --corruptions`). Times and memory: `marsedge bench` on a "
        f"{default['machine']['summary']} (load average {default['machine']['load_average'][0]} at the start), "
        "XNNPACK, a 1024x1024 frame through `Segmenter.segment`, resize and mask included.",
        width=92,
        break_on_hyphens=False,
    )


def class_table(record: dict[str, Any]) -> str:
    """MODEL_CARD: per-class IoU and big-rock precision/recall on every whole test frame."""
    lines = [
        "| model | mean IoU | soil | bedrock | sand | big rock | big rock precision / recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in _entries(record):
        for key in ("int8", "float32"):
            test = entry["frames_test"].get(key)
            if not test:
                continue
            cells = [_iou(test[c]) for c in ("mean_iou", *CLASSES)]
            lines.append(
                f"| {name} {key} | "
                + " | ".join(cells)
                + f" | {_iou(test['big_rock_precision'])} / {_iou(test['big_rock_recall'])} |"
            )
    return "\n".join(lines)


def tiles_table(record: dict[str, Any]) -> str:
    """MODEL_CARD: test split at the model's resolution (``marsedge eval MODEL``)."""
    lines = [
        "| model | test split, at the model's resolution | mean IoU | soil | bedrock | sand | big rock | agree with float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in _entries(record):
        tiles = entry["tiles_test"]
        data = Path(tiles["data"]).name
        for key in ("int8", "float32"):
            if key not in tiles:
                continue
            row = tiles[key]
            agree = f"{row['agree']:.1%}" if row.get("agree") is not None and key != "float32" else ""
            cells = [_iou(row[c]) for c in ("mean_iou", *CLASSES)]
            lines.append(f"| {name} {key} | {tiles['count']:,} of `{data}` | " + " | ".join(cells) + f" | {agree} |")
    return "\n".join(lines)


def _conditions(record: dict[str, Any]) -> list[tuple[str, str, list[float]]]:
    from marsedge.benchmarks.corruptions import CORRUPTIONS

    names = {"noise": "noise sigma", "blur": "blur radius", "jpeg": "JPEG", "gamma": "gamma", "size": "frame"}
    return [(c.name, names[c.name], list(c.levels)) for c in CORRUPTIONS]


def corruption_summary(record: dict[str, Any]) -> str:
    """README: clean and the middle severity of each corruption, int8, per model."""
    middle = [("noise", 4, "noise sigma 4"), ("blur", 1, "blur radius 1"), ("blur", 2, "blur radius 2")]
    middle += [("jpeg", 50, "JPEG 50"), ("gamma", 1.6, "gamma 1.6")]
    models = _models_with(record, "corruptions")
    frames = models[0][1]["corruptions"]["frames"] if models else 0
    head = f"| int8, whole test frames ({frames}) | clean | " + " | ".join(m[2] for m in middle) + " |"
    lines = [head, "|---" * (2 + len(middle)) + "|"]
    for name, entry in models:
        table = entry["corruptions"].get("int8")
        if not table:
            continue
        cells = [_iou(table["clean"]["mean_iou"])]
        for corruption, level, _ in middle:
            row = table[level_key(corruption, level)]
            cells.append(f"{_iou(row['mean_iou'])} ({_pct(row['share'])})")
        lines.append(f"| {_label(name, record)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corruption_table(record: dict[str, Any]) -> str:
    """MODEL_CARD: every condition, int8, mIoU and share of clean, one column pair per model."""
    models = [(n, e) for n, e in _models_with(record, "corruptions") if e["corruptions"].get("int8")]
    head = "| condition | " + " | ".join(f"{name} int8 | share" for name, _ in models) + " |"
    lines = [head, "|---" * (1 + 2 * len(models)) + "|"]
    lines.append(
        "| clean | "
        + " | ".join(f"{_iou(e['corruptions']['int8']['clean']['mean_iou'])} | 100%" for _, e in models)
        + " |"
    )
    for corruption, label, levels in _conditions(record):
        unit = " px" if corruption == "size" else ""
        cells = []
        for _, entry in models:
            rows = [entry["corruptions"]["int8"][level_key(corruption, level)] for level in levels]
            cells.append(" / ".join(_iou(r["mean_iou"]) for r in rows))
            cells.append(" / ".join(f"{r['share'] * 100:.0f}" for r in rows) + "%")
        lines.append(f"| {label} {' / '.join(f'{v:g}' for v in levels)}{unit} | " + " | ".join(cells) + " |")
    lines.append(
        "| lowest share, middle / worst severity | "
        + " | ".join(
            f" | {_pct(e['corruptions']['int8']['middle_min_share'])} / {_pct(e['corruptions']['int8']['worst_min_share'])}"
            for _, e in models
        )
        + " |"
    )
    lines.append(
        "| big rock precision / recall (clean) | "
        + " | ".join(
            f"{_iou(e['corruptions']['int8']['clean']['big_rock_precision'])} / "
            f"{_iou(e['corruptions']['int8']['clean']['big_rock_recall'])} | "
            for _, e in models
        )
        + " |"
    )
    return "\n".join(lines)


def precision_corruptions(name: str) -> Callable[[dict[str, Any]], str]:
    """One model's corruption table, int8 against float32 (the bench's layout)."""

    def render(record: dict[str, Any]) -> str:
        entry = record["models"][name]["corruptions"]
        tables = {}
        for key in ("int8", "float32"):
            if key in entry:
                tables[key] = entry[key]
        head = "| condition | " + " | ".join(f"{key} mIoU | share" for key in tables) + " |"
        lines = [head, "|---" * (1 + 2 * len(tables)) + "|"]
        lines.append(
            "| clean | " + " | ".join(f"{_iou(t['clean']['mean_iou'])} | 100%" for t in tables.values()) + " |"
        )
        for corruption, label, levels in _conditions(record):
            for level in levels:
                rows = [t[level_key(corruption, level)] for t in tables.values()]
                cells = " | ".join(f"{_iou(r['mean_iou'])} | {_pct(r['share'])}" for r in rows)
                lines.append(f"| {label} {level:g}{' px' if corruption == 'size' else ''} | {cells} |")
        return "\n".join(lines)

    return render


def speed_table(record: dict[str, Any]) -> str:
    """MODEL_CARD: speed and size of every bundled file, from the same bench runs."""
    lines = [
        "| model | file | size KB | MACs per input | ms per input, 1 / 2 threads | ms per 1024 frame, 1 / 2 threads "
        "| int8 speed-up, 1 / 2 threads | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key, file, speed in _bundled_files(record):
        per_input = _per_thread(speed, "ms_input", ".2f")
        per_frame = _per_thread(speed, "ms_frame_1024", ".0f")
        ups = [speed[f"t{t}"]["speedup_vs_float32"] for t in THREADS]
        up = " / ".join(f"{u:.1f}x" for u in ups) if key == "int8" and all(ups) else ""
        macs = f"{file['macs'] / 1e6:,.1f} M" if file.get("macs") else ""
        rss = f"{speed['rss_mb']:.0f}" if speed.get("rss_mb") else ""
        lines.append(
            f"| {name} {key} | `{file['file']}` | {file['size_kb']:,.1f} | {macs} | {per_input} | {per_frame} "
            f"| {up} | {rss} |"
        )
    return "\n".join(lines)


def machines(record: dict[str, Any]) -> str:
    """Which machine measured which entry, and when."""
    lines = []
    for name, entry in _entries(record):
        machine = entry["machine"]
        load = machine.get("load_average") or ["n/a"]
        when = entry["created"]
        if entry.get("accuracy_created"):
            when = f"accuracy {entry['accuracy_created']}, speed {entry['created']}"
        lines.append(
            f"- `{name}`: {when}, marsedge {entry['marsedge_version']}, {machine['summary']}, "
            f"{machine['interpreter']}, load average {load[0]} at the start (`{entry['command']}`)."
        )
    return "\n".join(lines)


def bench_section(record: dict[str, Any]) -> str:
    """BENCHMARKS.md's generated section: the default model's ``marsedge bench`` report."""
    from marsedge.benchmarks.report import doc_section

    text = doc_section(record["models"][_default_name(record)]["bench"])
    return "\n".join(text.splitlines()[1:-1])  # without the markers: update_sections keeps its own


def measure_scale(frames: int = 64, workers: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """``python -m marsedge.benchmarks.cluster`` for docs/scale.md: one process against
    ``marsedge batch`` on Ray, 1024x1024 frames, the default model."""
    from marsedge.benchmarks.cluster import run
    from marsedge.benchmarks.machine import describe_machine

    machine = describe_machine()
    started = datetime.now(timezone.utc)
    report = run(frames, 1024, list(workers), None, None)
    return {
        "created": started.isoformat(timespec="seconds"),
        "marsedge_version": __version__,
        "command": f"python -m marsedge.benchmarks.figures --scale  (python -m marsedge.benchmarks.cluster --frames {frames})",
        "machine": {**machine, "summary": cpu_summary(machine)},
        **report,
        "one": report["results"][0],
    }


def scale_table(record: dict[str, Any]) -> str:
    """docs/scale.md: frames per second of one process and of Ray, per setup."""
    scale = record["scale"]
    lines = [
        "| setup | frames/s | steady frames/s | ms/frame/core | in segment_file, ms | Ray overhead, ms/frame | start-up, s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in scale["results"]:
        ray = row["setup"].startswith("Ray")
        overhead = f"{row['overhead_ms_per_frame']:+.1f}" if ray else f"(+{row['overhead_ms_per_frame']:.1f} loop)"
        lines.append(
            f"| {row['setup']} | {row['frames_per_s']:.2f} | {row['steady_frames_per_s']:.2f} | "
            f"{row['ms_per_frame_core']:.1f} | {row['in_frame_ms']:.1f} | {overhead} | {row['startup_s']:.1f} |"
        )
    machine = scale["machine"]
    lines += [
        "",
        f"{scale['frames']} frames of {scale['size']}x{scale['size']}, {scale['model']} model, on a {machine['summary']} "
        f"(load average {machine['load_average'][0]} at the start); starting the local Ray instance took a "
        f"further {scale['ray_init_s']:.0f} s. `{scale['command']}`, {scale['created']}.",
    ]
    return "\n".join(lines)


def scale_stages(record: dict[str, Any]) -> str:
    """docs/scale.md: where one frame's time goes (one process, one thread)."""
    from marsedge.benchmarks.cluster import STAGE_NAMES, STAGES

    stages = record["scale"]["one"]["stage_ms"]
    total = sum(stages.values())
    lines = ["| stage | ms | share |", "|---|---|---|"]
    for stage in STAGES:
        lines.append(f"| {STAGE_NAMES[stage]} | {stages[stage]:.1f} | {stages[stage] / total:.0%} |")
    return "\n".join(lines)


def confidence_table(record: dict[str, Any]) -> str:
    """MODEL_CARD: the calibration of every bundled file on the test split (``marsedge eval FILE``)."""
    lines = [
        "| file | T | test ECE | test ECE at T = 1 | pixels at confidence >= 0.9 | their accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in _entries(record):
        for key in ("int8", "float32"):
            calibration = (entry.get("calibration") or {}).get(key)
            if not calibration:
                continue
            test = calibration["test"]
            lines.append(
                f"| {name} {key} | {calibration['temperature']:.3f} | {test['ece']:.4f} | {test['ece_t1']:.4f} | "
                f"{test['trusted_share']:.1%} | {test['trusted_accuracy']:.1%} |"
            )
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "confidence table": confidence_table,
    "scale table": scale_table,
    "scale stages": scale_stages,
    "models": readme_models,
    "frames note": frames_note,
    "corruption summary": corruption_summary,
    "class table": class_table,
    "tiles table": tiles_table,
    "corruption table": corruption_table,
    "speed table": speed_table,
    "machines": machines,
    "navcam-tiles corruptions": precision_corruptions("navcam-tiles"),
}
BENCH_BEGIN = "<!-- marsedge bench: generated section, begin -->"
BENCH_END = "<!-- marsedge bench: generated section, end -->"
SECTION = re.compile(
    r"(<!-- figures: (?P<name>[\w -]+), begin -->)(?P<body>.*?)(<!-- figures: (?P=name), end -->)", re.S
)


def _render(name: str, record: dict[str, Any]) -> str:
    if name not in SECTIONS:
        raise KeyError(f"no generated section called {name!r} (known: {', '.join(SECTIONS)})")
    return SECTIONS[name](record).strip("\n")


def update_sections(text: str, record: dict[str, Any]) -> str:
    """``text`` with every generated section and inline figure rewritten from the record."""
    text = SECTION.sub(lambda m: m.group(1) + "\n" + _render(m.group("name"), record) + "\n" + m.group(4), text)
    begin, end = text.find(BENCH_BEGIN), text.find(BENCH_END)
    if begin >= 0 and end > begin and _default_name(record) in record["models"]:
        text = text[: begin + len(BENCH_BEGIN)] + "\n" + bench_section(record) + "\n" + text[end:]
    return rewrite_inline(text, record)


def documents(root: Path = REPO_ROOT) -> list[Path]:
    found: list[Path] = []
    for pattern in DOCUMENTS:
        found += sorted(root.glob(pattern))
    return found


def write_documents(record: dict[str, Any], root: Path = REPO_ROOT) -> list[Path]:
    """Rewrites the generated sections and inline figures of every document; returns those changed."""
    changed = []
    for path in documents(root):
        text = path.read_text(encoding="utf-8")
        new = update_sections(text, record)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m marsedge.benchmarks.figures",
        description="Measure the bundled models' figures into docs/figures.json and rewrite the documents' figures.",
    )
    parser.add_argument("--models", default="", help="comma-separated bundled model names (default: all)")
    parser.add_argument("--data-root", default="../shared/data", help="the shared data folder (default: %(default)s)")
    parser.add_argument("--record", default=str(RECORD), help="the record to update (default: docs/figures.json)")
    parser.add_argument("--corruption-frames", type=int, default=CORRUPTION_FRAMES)
    parser.add_argument("--docs-only", action="store_true", help="only rewrite the documents from the record")
    parser.add_argument("--no-docs", action="store_true", help="only measure; leave the documents as they are")
    parser.add_argument(
        "--force", action="store_true", help="measure a model whose files another entry measured already"
    )
    parser.add_argument("--scale", action="store_true", help="only measure docs/scale.md's throughput (needs Ray)")
    parser.add_argument("--table", action="store_true", help="print README's table of the bundled models at the end")
    parser.add_argument(
        "--speed-only", action="store_true", help="measure speed, memory and sizes again; keep accuracy and corruptions"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from marsedge.errors import MarsEdgeError

    record = read_record(args.record)
    if args.scale:
        try:
            scale = measure_scale()
        except MarsEdgeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        record = read_record(args.record)
        record["scale"] = scale
        write_record(record, args.record)
    elif not args.docs_only:
        bundled = bundled_models()
        names = [n.strip() for n in args.models.split(",") if n.strip()] or list(bundled)
        unknown = [n for n in names if n not in bundled]
        if unknown:
            print(f"error: not a bundled model: {', '.join(unknown)} (bundled: {', '.join(bundled)})", file=sys.stderr)
            return 2
        initial = dict(record["models"])  # before any entry is replaced: a renamed model's old entry
        for name in names:
            if not args.speed_only and not args.force and name not in record["models"]:
                # a renamed model (the same files under a new name): its figures carry over
                known = initial
                twin = next((other for other, entry in known.items() if same_files(entry, bundled[name])), None)
                if twin is not None:
                    record = read_record(args.record)
                    record["models"][name] = {**known[twin], "command": known[twin]["command"].replace(twin, name)}
                    write_record(record, args.record)
                    logger.info("%s: the files %s was measured with; its figures carried over", name, twin)
                    continue
            previous = read_record(args.record)["models"].get(name) if args.speed_only else None
            if args.speed_only and previous is None:
                print(f"error: --speed-only: {name} has no entry to keep the accuracy of", file=sys.stderr)
                return 1
            try:
                entry = measure(
                    name, bundled[name], Path(args.data_root), args.corruption_frames, logger.info, previous
                )
            except MarsEdgeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            record = read_record(args.record)  # another model's entry may have been merged meanwhile
            record.setdefault("models", {})[name] = entry
            record["schema"] = SCHEMA
            write_record(record, args.record)
            logger.info("%s: written to %s", name, args.record)
    if args.table:
        print(f"{readme_models(record)}\n\n{frames_note(record)}")
    if args.no_docs:
        return 0
    changed = write_documents(record)
    for path in changed:
        logger.info("rewrote the figures of %s", path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Turning a benchmark report into the files people read: a Markdown table, the JSON, a
plot of IoU against latency, the raw-sample log, and the generated part of BENCHMARKS.md."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from marsedge.benchmarks.bench import BenchResult
from marsedge.core.atomic import write_text

logger = logging.getLogger(__name__)

DOC_BEGIN = "<!-- marsedge bench: generated section, begin -->"
DOC_END = "<!-- marsedge bench: generated section, end -->"
OPS_BEGIN = "<!-- marsedge bench --profile-ops: generated section, begin -->"
OPS_END = "<!-- marsedge bench --profile-ops: generated section, end -->"
DASH = "—"

CHANGE_COLUMN = "mIoU vs ref (points)"
TABLE_COLUMNS = (
    "format",
    "file",
    "threads",
    "size KB",
    "mIoU",
    "{classes}",
    "agree %",
    "ms/tile p50",
    "ms/tile p99",
    "ms/frame",
    "FPS",
    "RSS MB",
    "GMAC/s (% float32 peak)",
    "speed-up vs float32",
    CHANGE_COLUMN,
)
# the terminal's table: the columns that answer "which format do I ship?" (the wide one is in benchmarks.md)
SHORT_COLUMNS = (
    "format",
    "threads",
    "size KB",
    "mIoU",
    CHANGE_COLUMN,
    "ms/tile p50",
    "FPS",
    "RSS MB",
    "speed-up vs float32",
)


def change_cell(iou_drop: float | None) -> str:
    """A model's mIoU against the reference in signed points: "+0.35" (better), "-1.20" (worse)."""
    if iou_drop is None:
        return DASH
    points = round(-iou_drop * 100, 2)
    return "0.00" if points == 0 else f"{points:+.2f}"


def _cell(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def table_header(report: dict[str, Any]) -> list[str]:
    """Column names of :func:`markdown_table`, with one IoU column per scored class."""
    header: list[str] = []
    for column in TABLE_COLUMNS:
        header += [f"IoU {name}" for name in report["scored_classes"]] if column == "{classes}" else [column]
    return header


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per model and thread count (one row for a model without timings)."""
    rows = []
    for model in report["models"]:
        accuracy = model["accuracy"]
        common = [model["label"], Path(model["path"]).name]
        scores = [
            _cell(model["size_kb"], 1),
            _cell(accuracy["mean_iou"], 4),
            *[_cell(accuracy["class_iou"].get(name), 4) for name in report["scored_classes"]],
            _cell(accuracy["pixel_agreement"] * 100 if accuracy["pixel_agreement"] is not None else None, 2),
        ]
        rss = model["rss"]["peak_mb"] if model.get("rss") else None
        drop = change_cell(accuracy["iou_drop"])
        for speed in model["speed"] or [None]:
            if speed is None:
                rows.append([*common, DASH, *scores, *[DASH] * 7, drop])
                continue
            frame = speed["frame_ms"]["mean"] if speed["frame_ms"] else None
            gmacs = speed["gmacs"]
            if gmacs is not None and speed["peak_fraction"] is not None:
                gmacs_cell = f"{gmacs:.1f} ({100 * speed['peak_fraction']:.0f}%)"
            else:
                gmacs_cell = _cell(gmacs, 1)
            rows.append(
                [
                    *common,
                    str(speed["threads"]),
                    *scores,
                    _cell(speed["tile_ms"]["p50"], 2),
                    _cell(speed["tile_ms"]["p99"], 2),
                    _cell(frame, 0),
                    _cell(speed["fps"], 2),
                    _cell(rss, 0),
                    gmacs_cell,
                    _cell(speed["speedup_vs_float32"], 2, "x"),
                    drop,
                ]
            )
    return rows


def markdown_table(report: dict[str, Any], columns: tuple[str, ...] | None = None) -> str:
    """The table that answers "which model should I ship?": every column (benchmarks.md),
    or only ``columns`` (the terminal's :data:`SHORT_COLUMNS`)."""
    header = table_header(report)
    rows = table_rows(report)
    if columns is not None:
        keep = [header.index(c) for c in columns if c in header]
        header = [header[i] for i in keep]
        rows = [[row[i] for i in keep] for row in rows]
    text_columns = 2 if columns is None else 1
    rule = "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def terminal_table(report: dict[str, Any]) -> str:
    """The few columns that decide which format ships (the full table is in benchmarks.md)."""
    return "\n".join([markdown_table(report, SHORT_COLUMNS), *corruption_lines(report)]).rstrip()


def notes(report: dict[str, Any]) -> str:
    """What the columns mean, in the words a reader needs to trust them."""
    settings = report["settings"]
    tile = "x".join(map(str, settings["tile_size"]))
    frame = "x".join(map(str, settings["frame_size"]))
    lines = [
        f"- Accuracy: {settings['tiles']} tiles ({settings['tiles_from']}); mIoU over "
        f"{', '.join(report['scored_classes'])} (unlabeled pixels ignored); `agree %` = pixels with the same class "
        f"as the float reference ({report['reference'] or 'none'}); `{CHANGE_COLUMN}` = this mIoU minus the "
        "reference's, in points (+ better, - worse).",
        f"- Speed through the edge runtime (`Segmenter.segment`, XNNPACK): {settings['warmup']} warm-up then "
        f"{settings['runs']} timed {tile} tiles per model and thread count; `ms/tile` includes the runtime's "
        f"pre/post-processing; `ms/frame` is the mean of {settings['frame_runs']} {frame} frames tiled by the "
        f"Segmenter (overlapping tiles); FPS = frames per second at that size.",
        "- `GMAC/s` = MACs per tile / median interpreter time per tile; for float models, in brackets, its share of "
        "the machine's measured float32 GEMM peak at the same thread count (int8 models: no share; there is no "
        "measured int8 peak to hold them against).",
        "- `RSS MB`: peak resident memory (VmHWM) of a separate Python process that loads the runtime and the model "
        f"and segments one {frame} frame.",
        "- `speed-up vs float32` = float32 export's median ms/tile / this model's, same thread count.",
    ]
    for peak in report.get("peak") or []:
        lines.append(
            f"- Float32 GEMM peak at {peak['threads']} thread(s): {peak['float32_gmacs']:.1f} GMAC/s (measured)."
        )
    if settings.get("warning"):
        lines.insert(0, f"- **Warning:** {settings['warning']}")
    return "\n".join(lines) + "\n"


def machine_lines(report: dict[str, Any]) -> str:
    machine = report["machine"]
    load = machine.get("load_average")
    return (
        f"- CPU: {machine['cpu']} ({machine['machine']}), {machine['usable_cpus']} usable of "
        f"{machine['logical_cpus']} logical CPUs, {machine['memory_gb']} GB RAM\n"
        f"- OS: {machine['os']}; Python {machine['python']}, numpy {machine['numpy']}, {machine['interpreter']}\n"
        f"- Load average when the benchmark started: {', '.join(map(str, load)) if load else 'n/a'} "
        "(other work on the machine slows every row alike, but widens p99)\n"
    )


def log_text(result: BenchResult) -> str:
    """``benchmarks.log``: the raw samples, one line per model, thread count and kind."""
    report = result.report
    lines = [f"# marsedge bench {report['created']}", f"# command: {report['command']}"]
    for sample in result.samples:
        prefix = f"model={sample['model']} threads={sample['threads']}"
        lines.append(f"{prefix} load_ms={sample['load_ms']} first_ms={sample['first_ms']}")
        for kind in ("tile_ms", "infer_ms", "frame_ms"):
            if sample[kind]:
                lines.append(f"{prefix} {kind}: " + " ".join(str(v) for v in sample[kind]))
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> bool:
    """IoU against median ms/tile, one point per format and thread count; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from marsedge.errors import install_hint

        logger.warning("matplotlib is not installed (%s): no plot written", install_hint("train"))
        return False
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    markers = "osD^v<>"
    threads = report["settings"]["threads"]
    for i, count in enumerate(threads):
        xs, ys, labels = [], [], []
        for model in report["models"]:
            for speed in model["speed"] or []:
                if speed["threads"] == count and model["accuracy"]["mean_iou"] is not None:
                    xs.append(speed["tile_ms"]["p50"])
                    ys.append(model["accuracy"]["mean_iou"])
                    labels.append(model["label"])
        axes.scatter(xs, ys, marker=markers[i % len(markers)], label=f"{count} thread(s)")
        for x, y, label in zip(xs, ys, labels):
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for model in report["models"]:
        if model["kind"] == "keras" and model["accuracy"]["mean_iou"] is not None:
            axes.axhline(model["accuracy"]["mean_iou"], linestyle="--", linewidth=1, color="grey", label="Keras float")
    axes.set_xlabel("median latency per tile (ms)")
    axes.set_ylabel("mean IoU (classes 1..4)")
    axes.set_title("marsedge bench: accuracy against latency")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)
    return True


def write_outputs(result: BenchResult, out: Path, with_plot: bool = True) -> dict[str, Path]:
    """Writes ``benchmarks.{md,json,log,png}`` into ``out``; returns what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = result.report
    written = {
        "markdown": write_text(
            out / "benchmarks.md", "\n".join([markdown_table(report), notes(report), *corruption_lines(report)])
        ),
        "json": write_text(out / "benchmarks.json", json.dumps(report, indent=2) + "\n"),
        "log": write_text(out / "benchmarks.log", log_text(result)),
    }
    if with_plot and plot(report, out / "benchmarks.png"):
        written["plot"] = out / "benchmarks.png"
    return written


def doc_section(report: dict[str, Any], placeholder: str | None = None, plot_link: str | None = None) -> str:
    """The generated part of BENCHMARKS.md: machine, command, table, notes."""
    parts = [DOC_BEGIN, ""]
    if placeholder:
        parts += [f"> **Placeholder:** {placeholder}", ""]
    parts += [
        f"Generated {report['created']} by marsedge {report['marsedge_version']}.",
        "",
        "Command:",
        "",
        "```sh",
        report["command"] or "marsedge bench",
        "```",
        "",
        "Machine:",
        "",
        machine_lines(report),
        markdown_table(report),
        notes(report),
        *corruption_lines(report),
        *([f"![mean IoU against latency per tile]({plot_link})", ""] if plot_link else []),
        DOC_END,
    ]
    return "\n".join(parts) + "\n"


def corruption_lines(report: dict[str, Any]) -> list[str]:
    """The corruption benchmark's section (``--corruption-frames``), or nothing."""
    section = report.get("corruptions")
    if not section:
        return []
    from marsedge.benchmarks.corruptions import markdown as corruption_markdown

    return [
        f"Corruption benchmark: {section['frames']} whole labelled frames ({section.get('split', 'test')} split) of `{section['data']}`, "
        f"seed {section['seed']}; share = mIoU as a share of the clean mIoU.",
        "",
        corruption_markdown(section["tables"]),
        "",
    ]


def update_doc(path: Path, section: str, begin_marker: str = DOC_BEGIN, end_marker: str = DOC_END) -> Path:
    """Replaces the generated section of ``path`` (appends it when the markers are absent)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin >= 0 and end > begin:
        text = text[:begin] + section.rstrip("\n") + text[end + len(end_marker) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    return write_text(path, text if text.endswith("\n") else text + "\n")


def ops_markdown(profiles: list[Any]) -> str:
    """Per-op tables, then one comparison of time per op type across the profiled models."""
    from marsedge.benchmarks.ops import op_type_totals

    parts = []
    for profile in profiles:
        parts.append(
            f"### {profile.model}, {profile.threads} thread(s)\n\n"
            f"Whole model {profile.whole_model_ms:.3f} ms median, {profile.whole_model_min_ms:.3f} ms min "
            f"(of {profile.runs}); sum of ops timed alone {profile.sum_of_ops_ms:.3f} ms median, "
            f"{profile.sum_of_ops_min_ms:.3f} ms min; {profile.partitions} XNNPACK partition(s); "
            f"not taken by XNNPACK: {', '.join(profile.not_delegated) or 'none'}.\n\n"
            "| # | op | type | output | MMACs | XNNPACK | ms median | ms min | share | GMAC/s |\n"
            "|---:|---|---|---|---:|---|---:|---:|---:|---:|\n"
            + "".join(
                f"| {row.index} | {row.op} | {row.dtype} | {'x'.join(map(str, row.output_shape))} | "
                f"{row.macs / 1e6:.2f} | {'yes' if row.xnnpack else '**no**'} | {row.ms:.4f} | {row.min_ms:.4f} | "
                f"{100 * row.share:.1f}% | {_cell(row.gmacs, 1)} |\n"
                for row in profile.ops
            )
        )
    totals = [(p, op_type_totals(p)) for p in profiles]
    kinds = sorted({k for _, t in totals for k in t}, key=lambda k: -max(t.get(k, {}).get("ms", 0) for _, t in totals))
    header = "| op type | " + " | ".join(f"{Path(p.model).name} @{p.threads}t ms (n)" for p, _ in totals) + " |"
    rows = [header, "|---|" + "---:|" * len(totals)]
    for kind in kinds:
        cells = []
        for _, table in totals:
            entry = table.get(kind)
            cells.append(f"{entry['ms']:.3f} ({entry['count']})" if entry else DASH)
        rows.append(f"| {kind} | " + " | ".join(cells) + " |")
    rows.append("| sum of ops alone | " + " | ".join(f"{p.sum_of_ops_ms:.3f}" for p, _ in totals) + " |")
    rows.append("| **whole model** | " + " | ".join(f"**{p.whole_model_ms:.3f}**" for p, _ in totals) + " |")
    rows.append("| XNNPACK partitions | " + " | ".join(str(p.partitions) for p, _ in totals) + " |")
    parts.append("### Time per op type\n\n" + "\n".join(rows) + "\n")
    parts.append(
        "Each op is timed alone in a single-op model (with the ops that compute its constant inputs), same "
        "interpreter, threads and XNNPACK; an op alone pays a fixed per-invoke cost and misses cross-op effects "
        "of the full graph, so the sum of ops need not equal the whole model.\n"
    )
    return "\n".join(parts)

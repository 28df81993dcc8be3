"""Run the reliability suite (fuzz, corpus, model, watch, scale, training faults) and count
the cases tried and passed; optionally run the soak benchmark; optionally write both into
docs/reliability.md.

    python tools/reliability_report.py                      # fast tests, 200 fuzz examples each
    python tools/reliability_report.py --slow --soak --write-doc docs/reliability.md

Cases are what the tests record with pytest's ``record_property("tried"|"passed", category)``
(one per fuzz example, corpus file, model fault, kill...), read back from a JUnit XML
report. Fuzz examples are deterministic (hypothesis ``derandomize``) unless ``--random``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_reliability_*.py"))
START, END = "<!-- reliability-report:start -->", "<!-- reliability-report:end -->"
SOAK_START, SOAK_END = "<!-- soak:start -->", "<!-- soak:end -->"

CATEGORIES = {
    "corpus.ok": "nasty corpus: unusual valid images (1x1, 16-bit, palette, CMYK, alpha, EXIF...)",
    "corpus.error": "nasty corpus: broken files, non-images, decompression bombs",
    "corpus.process": "nasty corpus through a real process with a timeout",
    "corpus.archives": "nasty archives: broken PDS labels, wrong record counts, truncated data, corrupt bag messages",
    "filesystem": "FIFO, symlink loop, directory named .png, newline/tab/non-UTF-8 names, /dev/zero",
    "output_dir": "read-only and full output directories (tmpfs and simulated)",
    "fuzz.random_bytes": "hypothesis: random bytes with image names, in batches",
    "fuzz.mutated": "hypothesis: PNG/JPEG cut, bytes changed, inserted, deleted",
    "fuzz.valid_images": "hypothesis: valid images of any mode, size 1..300, EXIF orientation",
    "fuzz.loader": "hypothesis: load_gray raises only ImageError",
    "model": "model faults: truncated, no/corrupt metadata, shape, classes, scale, float vs --expect-int8",
    "model.damaged_checksum": "damaged flatbuffers (cut or bytes changed) refused by their SHA-256",
    "model.damaged_no_checksum": "damaged flatbuffers without a checksum (older exports), one child process",
    "model.metadata_fuzz": "hypothesis: any JSON in any metadata field",
    "watch.process": "marsedge-run --watch: signal stop, summary, restart without repeats",
    "soak": "short soak: flat RSS, identical masks from threads and processes",
}


def run_pytest(slow: bool, examples: int, random: bool, junit: Path) -> tuple[int, float]:
    env = dict(os.environ, MARSEDGE_FUZZ_EXAMPLES=str(examples))
    if random:
        env["MARSEDGE_FUZZ_RANDOM"] = "1"
    marker = "slow or not slow" if slow else "not slow"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rxX",
        "-m",
        marker,
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit1",
        *TESTS,
    ]
    start = time.perf_counter()
    code = subprocess.call(command, cwd=ROOT, env=env)
    return code, time.perf_counter() - start


def read_junit(junit: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(category -> [tried, passed], test file -> [tests, passed, expected failures])."""
    cases: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    files: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for case in ET.parse(junit).getroot().iter("testcase"):
        skipped = case.find("skipped")
        xfail = skipped is not None and "xfail" in (skipped.get("type", "") + skipped.get("message", ""))
        if skipped is not None and not xfail:
            continue
        name = case.get("classname", "").split(".")[-1] + ".py"
        ok = skipped is None and case.find("failure") is None and case.find("error") is None
        files[name][0] += 1
        files[name][1] += ok
        files[name][2] += xfail
        for prop in case.iter("property"):
            key = prop.get("value", "")
            if prop.get("name") == "tried":
                cases[key][0] += 1
            elif prop.get("name") == "passed":
                cases[key][1] += 1
    return dict(cases), dict(files)


def describe(category: str) -> str:
    if category in CATEGORIES:
        return CATEGORIES[category]
    if category.startswith("training.kill."):
        point = category.split(".", 2)[2]
        return f"training: kill -9 ({point}), run dir checked" + (
            " (random moment in an epoch)" if point == "random" else ""
        )
    return {
        "training.kill_first_epoch": "training: kill -9 in the first epoch, then a new start",
        "training.resume": "training: --resume after the kills, finished and consistent",
        "training.nan": "training: NaN loss stops with one line, best checkpoint kept",
        "training.data_changed": "training: changed data file reported on --resume",
    }.get(category, category)


def report(cases, files, seconds: float, code: int, slow: bool, examples: int) -> str:
    from marsedge.benchmarks.soak import machine

    tried = sum(t for t, _ in cases.values())
    passed = sum(p for _, p in cases.values())
    lines = [
        f"Produced by `python tools/reliability_report.py{' --slow' if slow else ''} --examples {examples}` on "
        f"{dt.datetime.now(dt.timezone.utc).date().isoformat()}; machine: {machine()}; {seconds:.0f} s; pytest exit code {code}.",
        "",
        "| cases | tried | passed |",
        "|---|---:|---:|",
    ]
    for category in sorted(cases):
        t, p = cases[category]
        lines.append(f"| {describe(category)} | {t} | {p} |")
    lines += [
        f"| **all** | **{tried}** | **{passed}** |",
        "",
        "| test file | tests | passed | expected failures (xfail) |",
        "|---|---:|---:|---:|",
    ]
    for name in sorted(files):
        t, p, x = files[name]
        lines.append(f"| {name} | {t} | {p} | {x} |")
    return "\n".join(lines)


def run_soak(args: list[str]) -> str:
    command = [sys.executable, "-m", "marsedge.benchmarks.soak", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"soak failed: {done.stderr[-2000:]}")
    shown = " ".join(["python -m marsedge.benchmarks.soak", *args])
    return f"Produced by `{shown}`.\n\n" + done.stdout.strip()


def replace_section(text: str, start: str, end: str, body: str) -> str:
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    return text.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also the slow tests (training faults, SIGINT watch)")
    parser.add_argument("--examples", type=int, default=200, help="hypothesis examples per fuzz property")
    parser.add_argument("--random", action="store_true", help="fresh random fuzz examples instead of the fixed ones")
    parser.add_argument("--soak", nargs=argparse.REMAINDER, help="also run the soak benchmark (arguments follow)")
    parser.add_argument("--write-doc", type=Path, help="replace the generated sections of this Markdown file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        code, seconds = run_pytest(args.slow, args.examples, args.random, junit)
        cases, files = read_junit(junit)
    text = report(cases, files, seconds, code, args.slow, args.examples)
    print(text)
    soak_text = run_soak(args.soak) if args.soak is not None else None
    if soak_text:
        print("\n" + soak_text)
    if args.write_doc:
        doc = args.write_doc.read_text(encoding="utf-8") if args.write_doc.exists() else ""
        doc = replace_section(doc, START, END, text)
        if soak_text:
            doc = replace_section(doc, SOAK_START, SOAK_END, soak_text)
        args.write_doc.write_text(doc, encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

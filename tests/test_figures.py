"""The documents quote one record (docs/figures.json), and what they name exists.

- every bundled model has an entry measured from its current files (the flatbuffer's
  sha256), so a changed model cannot keep its old figures;
- every generated section and inline figure of README, MODEL_CARD, BENCHMARKS.md and
  docs/ equals what ``python -m marsedge.benchmarks.figures --docs-only`` writes from the
  record (to the printed precision);
- every repository path, ``marsedge``/``marsedge-run`` option, ``python -m`` module,
  ``python tools/...`` script and ``make`` target the documents name exists.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import typer

from marsedge.benchmarks import figures

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*figures.documents(ROOT), ROOT / "configs" / "README.md", ROOT / "DEVELOPERS.md"]
RECORD = figures.read_record(ROOT / "docs" / "figures.json")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_record_has_every_bundled_model_measured_from_its_current_files():
    for name, path in figures.bundled_models().items():
        assert name in RECORD["models"], f"docs/figures.json has no entry for {name}: run make figures MODELS={name}"
        entry = RECORD["models"][name]
        assert entry["default_file"] == path.name
        for key, file in entry["files"].items():
            bundled = path.with_name(file["file"])
            assert bundled.is_file(), f"{name} {key}: {bundled} is not bundled"
            assert figures.flatbuffer_sha256(bundled) == file["flatbuffer_sha256"], (
                f"{bundled.name} changed since its figures were measured: run make figures MODELS={name}"
            )
        for part in ("tiles_test", "frames_test", "corruptions", "speed", "calibration"):
            assert entry[part].get("int8"), f"{name}: no int8 {part}"
        assert entry["frames_test"]["frames"] == 600 and entry["corruptions"]["frames"] == figures.CORRUPTION_FRAMES


@pytest.mark.parametrize("path", figures.documents(ROOT), ids=_name)
def test_every_figure_in_the_documents_is_the_record_s(path):
    text = path.read_text(encoding="utf-8")
    wrong = figures.stale_inline(text, RECORD)
    assert not wrong, f"{_name(path)}: figures that disagree with docs/figures.json:\n" + "\n".join(wrong)
    expected = figures.update_sections(text, RECORD)
    if expected != text:
        old, new = text.splitlines(), expected.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        pytest.fail(
            f"{_name(path)} line {first + 1}: a generated section is not what the record gives "
            f"(python -m marsedge.benchmarks.figures --docs-only rewrites it):\n"
            f"  file:   {old[first] if first < len(old) else '(end)'}\n  record: {new[first] if first < len(new) else '(end)'}"
        )


def test_inline_figures_follow_the_record(tmp_path):
    record = {"models": {"m": {"frames_test": {"int8": {"mean_iou": 0.7698, "big_rock": 0.509}}}}}
    text = "mIoU <!--fig:m.frames_test.int8.mean_iou|.3f-->0.771<!--/fig--> and <!--fig:(m.frames_test.int8.mean_iou - m.frames_test.int8.big_rock) * 100|.1f-->26.1<!--/fig--> points"
    assert figures.stale_inline(text, record) == ["m.frames_test.int8.mean_iou: the text says 0.771, the record 0.770"]
    fixed = figures.rewrite_inline(text, record)
    assert figures.stale_inline(fixed, record) == [] and ">0.770<" in fixed and ">26.1<" in fixed
    assert figures.formatted(0.8349, ".0%") == "83%"


# ---- what the documents name -------------------------------------------------------------

CODE = re.compile(r"`([^`\n]+)`")
BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
TOP = ("configs/", "marsedge/", "docs/", "tools/", "tests/", "../shared/data/")
NOT_IN_GIT = ("runs/", "benchmarks/", "demo_out/", "dist/", "out/")


def _snippets(text: str) -> list[str]:
    blocks = BLOCK.findall(text)
    rest = BLOCK.sub("", text)
    lines = [line for block in blocks for line in _joined(block)]
    return lines + CODE.findall(rest)


def _joined(block: str) -> list[str]:
    """A code block's lines, continuation lines (``\\``) joined."""
    return block.replace("\\\n", " ").splitlines()


def _paths(text: str) -> set[str]:
    found = set()
    for snippet in _snippets(text):
        for word in re.split(r"[\s'\"=,;()]+", snippet):
            word = word.split("::")[0].rstrip(".:")
            if word.startswith(TOP) and "<" not in word and "{" not in word and "…" not in word:
                found.add(word)
    return found


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_every_path_the_documents_name_exists(path):
    text = path.read_text(encoding="utf-8")
    missing = []
    for name in sorted(_paths(text)):
        where = ROOT / name
        if name.startswith("../shared/data/") and not (ROOT / "../shared/data").is_dir():
            continue  # the shared data is not on every machine
        if "*" in name:
            if not list(ROOT.glob(name)) and not name.startswith("../"):
                missing.append(name)
            continue
        if not where.exists():
            missing.append(name)
    for target in LINK.findall(text):
        if "://" in target or target.startswith(NOT_IN_GIT):
            continue
        if not (path.parent / target).exists():
            missing.append(f"link {target}")
    assert not missing, f"{_name(path)} names what does not exist: {', '.join(missing)}"


def _options(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(getattr(param, "secondary_opts", ()))
    return names


def _commands():
    from marsedge.cli import app
    from marsedge.edge_runtime.cli import app as run_app

    group = typer.main.get_command(app)
    return group, typer.main.get_command(run_app)


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def _command_problems(line: str, group, run) -> list[str]:
    line = line.split("#", 1)[0].strip().lstrip("$ ").strip()
    try:
        words = shlex.split(line)
    except ValueError:
        return []
    problems = []
    for i, word in enumerate(words):
        if word == "marsedge" and i + 1 < len(words) and re.fullmatch(r"[a-z][a-z-]*", words[i + 1]):
            if i and words[i - 1] in ("clone", "cd", "no"):  # a folder or a phrase, not the command
                continue
            sub = words[i + 1]
            if sub.isupper() or sub not in group.commands:
                if not sub.isupper():
                    problems.append(f"marsedge {sub}: no such command")
                continue
            known = _options(group.commands[sub])
            problems += [f"marsedge {sub} {w}" for w in _flags(words[i + 2 :]) if w not in known]
        elif word == "marsedge-run":
            known = _options(run)
            problems += [f"marsedge-run {w}" for w in _flags(words[i + 1 :]) if w not in known]
        elif word == "-m" and 0 < i < len(words) - 1 and "python" in words[i - 1]:
            module = words[i + 1]
            if module.startswith("marsedge") and importlib.util.find_spec(module) is None:
                problems.append(f"python -m {module}: no such module")
        elif word == "make" and i + 1 < len(words) and re.fullmatch(r"[\w-]+", words[i + 1]):
            if words[i + 1] not in _make_targets():
                problems.append(f"make {words[i + 1]}: no such target")
        elif re.fullmatch(r"tools/[\w-]+\.(py|sh)", word) and not (ROOT / word).is_file():
            problems.append(f"{word}: no such script")
    return problems


def _flags(words: list[str]) -> list[str]:
    flags = []
    for word in words:
        if word in ("|", "&&", ";", ">", "2>"):
            break
        if word.startswith("--") and len(word) > 2:
            flags += [part.split("=", 1)[0] for part in word.split("/") if part.startswith("--")]
    return flags


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_every_command_the_documents_name_exists(path):
    group, run = _commands()
    problems = []
    for snippet in _snippets(path.read_text(encoding="utf-8")):
        problems += _command_problems(snippet, group, run)
    assert not problems, (
        f"{_name(path)} names commands or options that do not exist: {'; '.join(sorted(set(problems)))}"
    )


def test_the_command_check_catches_a_made_up_option():
    group, run = _commands()
    assert _command_problems("marsedge eval MODEL --split test --frobnicate", group, run) == [
        "marsedge eval --frobnicate"
    ]
    assert _command_problems("marsedge-run frame.png --out out --tta", group, run) == []
    assert _command_problems("make figures MODELS=navcam", group, run) == []
    assert _command_problems("python -m marsedge.nothing", group, run) == ["python -m marsedge.nothing: no such module"]


def test_a_renamed_model_keeps_its_figures_and_tables_show_the_bundled_ones(tmp_path, monkeypatch):
    """A model bundled under a new name (today's default kept as another name) reuses the entry
    measured from its very files; entries of names no longer bundled leave the tables."""
    import json

    old = RECORD["models"]["navcam"]
    bundled = figures.bundled_models()
    renamed = {"navcam-fast": bundled["navcam"], **{k: v for k, v in bundled.items() if k != "navcam"}}
    monkeypatch.setattr(figures, "bundled_models", lambda: renamed)
    record_path = tmp_path / "figures.json"
    record_path.write_text(json.dumps(RECORD))
    assert figures.main(["--models", "navcam-fast", "--record", str(record_path), "--no-docs"]) == 0
    record = json.loads(record_path.read_text())
    assert record["models"]["navcam-fast"]["frames_test"] == old["frames_test"]
    assert "--models navcam-fast" in record["models"]["navcam-fast"]["command"]
    table = figures.readme_models(record)
    assert "`navcam-fast` (default)" in table and "`navcam` " not in table


def test_pi4_estimate_counts_every_network_call_of_a_1024_frame():
    from marsedge.edge_runtime.segmenter import BUNDLED_MODELS, Segmenter

    assert Segmenter(BUNDLED_MODELS["navcam"]).inputs_per_frame(1024, 1024) == 1
    assert Segmenter(BUNDLED_MODELS["navcam-tiles"]).inputs_per_frame(1024, 1024) == 3  # three 64x128 tiles
    speed = {"t1": {"ms_input": 5.0, "ms_frame_1024": 9.0}}
    one = figures.pi4_estimate_ms({"macs": 480e6, "inputs_1024": 1}, speed, "int8")
    assert one == pytest.approx(480 / 48 + 4 * 4.0)  # network at 48 GMAC/s, the rest at 4x its x86 time
    speed = {"t1": {"ms_input": 2.0, "ms_frame_1024": 9.0}}
    three = figures.pi4_estimate_ms({"macs": 320e6, "inputs_1024": 3}, speed, "float32")
    assert three == pytest.approx(3 * 320 / 32 + 4 * 3.0)
    assert figures.pi4_estimate_ms({"macs": None}, speed, "int8") is None


def test_table_prints_readme_s_rows_with_the_cpu(capsys, tmp_path):
    assert figures.main(["--record", str(figures.RECORD), "--docs-only", "--no-docs", "--table"]) == 0
    out = capsys.readouterr().out
    assert "| `navcam` (default) int8, `marsedge_int8.tflite` |" in out and "Raspberry Pi 4 estimate" in out
    machine = RECORD["models"]["navcam"]["machine"]["summary"]
    assert machine in " ".join(out.split())
    one = {**RECORD, "models": {"navcam-robust": RECORD["models"]["navcam-robust"]}}  # a record of one model
    (tmp_path / "one.json").write_text(json.dumps(one))
    assert figures.main(["--record", str(tmp_path / "one.json"), "--docs-only", "--no-docs", "--table"]) == 0
    assert "`navcam-robust` int8" in capsys.readouterr().out

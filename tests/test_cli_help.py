"""Every command's --help at 80 columns: option names whole, defaults shown, no stray spaces."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from marsedge.cli import app as marsedge_app
from marsedge.edge_runtime.cli import app as run_app

WIDTH = 80


def _commands():
    group = typer.main.get_command(marsedge_app)
    yield "marsedge", marsedge_app, [], group
    for name, command in sorted(group.commands.items()):
        yield f"marsedge {name}", marsedge_app, [name], command
    yield "marsedge-run", run_app, [], typer.main.get_command(run_app)


COMMANDS = list(_commands())


def _help(app, args) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("label, app, args, command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_help_fits_80_columns_with_whole_option_names(label, app, args, command):
    text = _help(app, args)
    assert "…" not in text, f"{label}: something cut off\n{text}"
    assert "<bool>" not in text and "range>" not in text, f"{label}: a flag shown with a value\n{text}"
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    for param in command.params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{label}: {name} not whole\n{text}"
    words = " ".join(text.split())  # the help as one line, wrapping undone
    assert not re.search(r"\w \.(\s|$)| ,", words), f"{label}: a stray space before punctuation\n{text}"


def test_train_options_show_their_defaults():
    words = " ".join(_help(marsedge_app, ["train"]).replace("│", " ").split())
    for option, default in [
        ("--epochs", "40"),
        ("--batch-size", "32"),
        ("--learning-rate", "0.002"),
        ("--loss", "focal_dice"),
        ("--augment", "flips"),
    ]:
        at = words.index(option)
        assert f"[default: {default}]" in words[at : words.index("[default:", at) + 40], option


def test_advanced_options_have_their_own_panels():
    train = _help(marsedge_app, ["train"])
    assert "─ Distillation, fine-tuning and weight averaging ─" in train and "─ Hardware ─" in train
    assert "─ Advanced ─" in _help(run_app, [])


def test_choice_options_list_their_values_and_refuse_others():
    for option, value in [("--loss", "focal_lovasz"), ("--augment", "camera"), ("--strategy", "mirrored")]:
        assert value in " ".join(_help(marsedge_app, ["train"]).split()), option
    result = CliRunner().invoke(marsedge_app, ["train", "--loss", "hinge"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "'hinge' is not one of" in result.stderr


def test_a_flag_takes_no_value():
    for label, app, args, command in COMMANDS:
        flags = [p for p in command.params if getattr(p, "is_flag", False)]
        text = " ".join(_help(app, args).split())
        for flag in flags:
            name = next(o for o in flag.opts if o.startswith("--"))
            assert not re.search(rf"{re.escape(name)} <", text), f"{label}: {name} shown with a value"

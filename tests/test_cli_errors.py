"""One exit-code rule in both commands: usage errors 2, data/model/I/O errors 1, and an
OSError as one line with the path and the reason."""

from __future__ import annotations

import errno

import pytest
import typer
from typer.testing import CliRunner

from marsedge.cli import _fail_io, app
from marsedge.errors import DataError, UsageError
from marsedge.train.synthetic import write_dataset

QUICK = ["--threads", "1", "--runs", "1", "--warmup", "0", "--frame-runs", "0", "--no-rss", "--no-peak"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_an_unwritable_output_is_one_line_with_the_path_and_exit_1(tiny_int8, tmp_path):
    data = write_dataset(tmp_path / "tiles.npz", 4, seed=0)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = invoke("bench", tiny_int8, "--data", data, "--out", blocker / "bench", *QUICK)
    assert result.exit_code == 1
    line = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(line) == 1 and str(blocker) in line[0] and "Not a directory" in line[0], result.stderr


def test_fail_io_names_the_path_and_the_reason(capsys):
    with pytest.raises(typer.Exit) as exit_info:
        _fail_io(OSError(errno.ENOSPC, "No space left on device", "/data/run/best.weights.h5"), "/data/run")
    assert exit_info.value.exit_code == 1
    assert capsys.readouterr().err == "error: /data/run/best.weights.h5: No space left on device\n"


@pytest.mark.parametrize(
    "args, code",
    [
        (["eval", "{model}", "--split", "sideways"], 2),  # a value the parser refuses
        (["bench", "{model}", "--threads", "1,x"], 2),  # an option the command cannot parse
        (["export", "{tmp}", "--formats", "float32,int4"], 2),
        (["eval", "{tmp}/missing.tflite", "--data", "{tmp}"], 1),  # a missing model
        (["export", "{tmp}/no_run"], 1),  # a missing run directory
    ],
)
def test_usage_errors_exit_2_and_data_errors_exit_1(args, code, tiny_int8, tmp_path):
    result = invoke(*[a.format(model=tiny_int8, tmp=tmp_path) for a in args])
    assert result.exit_code == code, result.output
    one_error_line(result)


def test_usage_error_is_a_marsedge_error():
    assert issubclass(UsageError, DataError.__mro__[1]) and not issubclass(DataError, UsageError)


def test_marsedge_run_usage_error_exits_2(tiny_int8):
    from marsedge.edge_runtime.cli import app as run_app

    result = CliRunner().invoke(run_app, ["x.png", "--model", str(tiny_int8), "--threads", "zero"])
    assert result.exit_code == 2
    one_error_line(result)

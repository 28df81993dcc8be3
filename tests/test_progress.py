"""marsedge.progress: one bar for the CLI and training; a line per step off a terminal."""
from __future__ import annotations

import io

from marsedge.progress import LINE, ProgressBar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_step_is_one_line():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar(0, 4, "start")
    bar(2, 4, "half")
    bar(4, 4, "done")
    assert stream.getvalue().splitlines() == [
        "[........................] 0/4 start",
        "[############............] 2/4 half",
        "[########################] 4/4 done",
    ]
    quiet = io.StringIO()
    ProgressBar(quiet, terminal_only=True)(1, 2, "x")
    assert quiet.getvalue() == ""


def test_on_a_terminal_the_line_is_redrawn_and_ends_or_is_erased():
    stream = _Terminal()
    bar = ProgressBar(stream)
    bar(1, 2, "a")
    bar(2, 2, "b")
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "2/2 b" in text
    transient = _Terminal()
    bar = ProgressBar(transient, transient=True)
    bar(2, 2, "last batch")
    assert not transient.getvalue().endswith("\n")
    bar.clear()
    assert transient.getvalue().endswith("\r" + " " * LINE + "\r")

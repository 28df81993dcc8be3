"""marsedge.progress and marsedge.plots: one progress bar for the CLI and training; the run plots."""
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


def test_plots_of_a_history_and_a_confusion_matrix(tmp_path):
    """marsedge.plots draws what a run directory and `marsedge eval --plot` show."""
    import numpy as np
    import pytest
    from PIL import Image

    pytest.importorskip("matplotlib")
    from marsedge.plots import confusion_png, curves_png

    history = [
        {"epoch": "1", "loss": "0.9", "val_miou": "0.4", "val_iou_soil": "0.5", "val_iou_big_rock": ""},
        {"epoch": "2", "loss": "0.7", "val_miou": "0.5", "val_iou_soil": "0.6", "val_iou_big_rock": "0.1"},
    ]
    curves = curves_png(history, tmp_path / "curves.png", title="run")
    matrix = np.arange(25).reshape(5, 5)
    matrix[1] = 0  # a class with no truth pixels: its row is all 0%
    confusion = confusion_png(matrix, tmp_path / "sub" / "confusion.png")
    for path in (curves, confusion):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["confusion.png", "curves.png"]

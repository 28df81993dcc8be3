"""The one progress bar of the ``marsedge`` command (training, benchmarks, op profiles)."""
from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 24  # characters of the bar itself
LINE = 119  # a terminal line is cut and padded to this many characters


class ProgressBar:
    """``bar(done, total, message)`` draws ``[####....] done/total message`` on stderr.

    On a terminal the line is redrawn in place and ends with a newline when ``done``
    reaches ``total`` (unless ``transient``: then it stays until :meth:`clear` erases it);
    elsewhere (a log file, CI) each call writes one line, or nothing with
    ``terminal_only``.
    """

    def __init__(self, stream: TextIO | None = None, terminal_only: bool = False, transient: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = self.terminal or not terminal_only
        self.transient = transient
        self._drawn = False

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if not self.enabled:
            return
        filled = WIDTH * min(done, total) // max(total, 1)
        line = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} {message}".rstrip()
        if self.terminal:
            finished = done >= total and not self.transient
            self.stream.write("\r" + line[:LINE].ljust(LINE) + ("\n" if finished else ""))
            self._drawn = not finished
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erases a bar left unfinished on a terminal (before a log line is written)."""
        if self.terminal and self._drawn:
            self.stream.write("\r" + " " * LINE + "\r")
            self.stream.flush()
            self._drawn = False

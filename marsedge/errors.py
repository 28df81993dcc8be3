"""Errors the CLI turns into one clear line and a non-zero exit.

Exit codes of ``marsedge`` and ``marsedge-run``: 0 done; 1 a data, model, run-directory or
I/O problem (or a failed check); 2 a usage error (:class:`UsageError`, or an option value
the parser refuses); 130 interrupted.
"""


class MarsEdgeError(Exception):
    """Base class for user-facing errors (bad input, missing files, missing extras)."""


class UsageError(MarsEdgeError):
    """Options that cannot go together or cannot apply to the given input (the CLI exits 2)."""


class DataError(MarsEdgeError):
    """A data file or folder has the wrong layout, dtype or values."""


class RunDirError(MarsEdgeError):
    """A run directory is missing or incomplete."""


def install_hint(extra: str) -> str:
    """How to add an extra: marsedge is not on PyPI, so from the repository or the wheel."""
    from marsedge import __version__

    return (
        f"pip install -e '.[{extra}]' in the marsedge repository, "
        f"or pip install 'marsedge-{__version__}-py3-none-any.whl[{extra}]'"
    )


class MissingExtraError(MarsEdgeError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, what: str, missing: str) -> None:
        super().__init__(f"{what} needs the [{extra}] extra ({missing} is not installed): {install_hint(extra)}")
        self.extra = extra

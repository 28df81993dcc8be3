"""Errors the CLI turns into one clear line and a non-zero exit."""


class MarsEdgeError(Exception):
    """Base class for user-facing errors (bad input, missing files, missing extras)."""


class DataError(MarsEdgeError):
    """A data file or folder has the wrong layout, dtype or values."""


class RunDirError(MarsEdgeError):
    """A run directory is missing or incomplete."""


class MissingExtraError(MarsEdgeError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, what: str, missing: str) -> None:
        super().__init__(
            f"{what} needs the [{extra}] extra ({missing} is not installed): "
            f"pip install 'marsedge[{extra}]'"
        )
        self.extra = extra

"""Atomic file writes, kept importable here: see :mod:`marsedge.core.atomic`."""

from marsedge.core.atomic import atomic_path, write_bytes, write_json, write_text  # noqa: F401

"""Where the commands find the shared data when ``--data`` is not given.

The same rule in a checkout, an editable install and a wheel install: the shared data
folder ``../shared/data`` seen from the current folder, then ``$MARSEDGE_DATA`` (a data
file, or a folder holding the shared files); never a path relative to the installed
package. A run directory's own data (its ``config.json``) and a model's split recipe
(``split.data_file``) name which file of that folder a command reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

SHARED_DATA = Path("..") / "shared" / "data"
TILES_FILE = "mars_terrain_64x128.npz"
FRAMES_FOLDER = "ai4mars-msl-256"
ENV = "MARSEDGE_DATA"
DEFAULT_HELP = (
    "a run's own data; for a .tflite the file its split recipe names (the bundled models: "
    f"{FRAMES_FOLDER}), else {TILES_FILE}; looked up in ../shared/data from the current folder, then ${ENV}"
)
TILES_HELP = f"{TILES_FILE} in ../shared/data from the current folder, else ${ENV}"
MISSING = (
    f"no --data given, and neither ../shared/data/{TILES_FILE} (from the current folder) nor ${ENV} names "
    "labelled data: give --data, or set MARSEDGE_DATA to the data file or its folder"
)


def _folders() -> Iterator[Path]:
    yield SHARED_DATA
    env = os.environ.get(ENV)
    if env:
        path = Path(env)
        yield path if path.is_dir() else path.parent


def shared_file(name: str) -> Path | None:
    """``name`` (a file or folder of the shared data) in the first folder holding it, or None."""
    for folder in _folders():
        if (folder / name).exists():
            return folder / name
    return None


def tiles_file() -> Path | None:
    """The default labelled tiles: the shared tile file, or the file ``$MARSEDGE_DATA`` names."""
    found = shared_file(TILES_FILE)
    if found is not None:
        return found
    env = os.environ.get(ENV)
    return Path(env) if env and Path(env).is_file() else None


def frames_folder() -> Path:
    """The default folder of labelled whole frames (``$MARSEDGE_FRAMES``, else the shared
    AI4Mars folder; its place under ../shared/data when nowhere)."""
    env = os.environ.get("MARSEDGE_FRAMES")
    if env:
        return Path(env)
    return shared_file(FRAMES_FOLDER) or SHARED_DATA / FRAMES_FOLDER


def run_data(path: str | os.PathLike[str]) -> Path | None:
    """The data file a run directory was trained on (its ``config.json``), when it exists here."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    data = (saved.get("train") or saved).get("data") if isinstance(saved, dict) else None
    if not isinstance(data, str) or not data:
        return None
    if Path(data).exists():
        return Path(data)
    return shared_file(Path(data).name)  # trained elsewhere: the same shared file here


def model_data(models: Sequence[str | os.PathLike[str]] = ()) -> Path | None:
    """The data the first of ``models`` that names one reads: a run directory's own data, or
    the file a .tflite's split recipe names (``split.data_file``: the whole AI4Mars frames
    for a model trained on them) in the shared data folder; else the default tile file."""
    for model in models:
        path = Path(model)
        if path.is_dir():
            found = run_data(path)
            if found is not None:
                return found
            continue
        if path.suffix != ".tflite" or not path.is_file():
            continue
        from marsedge.core.errors import ModelError
        from marsedge.core.metadata import read_metadata

        try:
            metadata = read_metadata(path)
        except ModelError:  # an unreadable model is reported where it is opened
            continue
        source = metadata.get("source_run")
        if isinstance(source, str) and Path(source).is_dir() and run_data(source) is not None:
            return run_data(source)
        name = (metadata.get("split") or {}).get("data_file")
        if isinstance(name, str) and name:
            found = shared_file(name)
            if found is not None:
                return found
    return tiles_file()

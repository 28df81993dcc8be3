"""Where the commands find the shared data without --data: from the current folder, then
$MARSEDGE_DATA, never from where the package is installed; a run's own data first."""

from __future__ import annotations

import json

from marsedge import datapaths


def _shared(root, name="mars_terrain_64x128.npz"):
    folder = root / "shared" / "data"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"x")
    (folder / "ai4mars-msl-256").mkdir()
    return folder


def test_the_shared_folder_is_found_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MARSEDGE_DATA", raising=False)
    _shared(tmp_path)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert datapaths.tiles_file() == datapaths.SHARED_DATA / "mars_terrain_64x128.npz"
    assert datapaths.shared_file("ai4mars-msl-256") == datapaths.SHARED_DATA / "ai4mars-msl-256"
    monkeypatch.chdir(tmp_path)  # elsewhere: nothing, wherever the package lives
    assert datapaths.tiles_file() is None and datapaths.shared_file("ai4mars-msl-256") is None


def test_marsedge_data_names_a_file_or_the_folder(tmp_path, monkeypatch):
    folder = _shared(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MARSEDGE_DATA", str(folder))
    assert datapaths.tiles_file() == folder / "mars_terrain_64x128.npz"
    assert datapaths.shared_file("ai4mars-msl-256") == folder / "ai4mars-msl-256"
    monkeypatch.setenv("MARSEDGE_DATA", str(folder / "mars_terrain_64x128.npz"))
    assert datapaths.tiles_file() == folder / "mars_terrain_64x128.npz"
    assert datapaths.shared_file("ai4mars-msl-256") == folder / "ai4mars-msl-256"  # the file's folder


def test_a_run_reads_its_own_data(tmp_path, monkeypatch):
    monkeypatch.delenv("MARSEDGE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"data": str(frames)}}))
    assert datapaths.model_data([run]) == frames
    (run / "config.json").write_text(json.dumps({"train": {"data": "/gone/ai4mars-msl-256"}}))
    _shared(tmp_path / "up")
    (tmp_path / "up" / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "up" / "checkout")  # trained elsewhere: the same shared folder here
    assert datapaths.model_data([run]) == datapaths.SHARED_DATA / "ai4mars-msl-256"


def test_a_bundled_model_reads_the_data_its_recipe_names(tmp_path, monkeypatch):
    from marsedge.edge_runtime.segmenter import DEFAULT_MODEL

    monkeypatch.delenv("MARSEDGE_DATA", raising=False)
    _shared(tmp_path)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert datapaths.model_data([DEFAULT_MODEL]) == datapaths.SHARED_DATA / "ai4mars-msl-256"
    assert datapaths.model_data([]) == datapaths.SHARED_DATA / "mars_terrain_64x128.npz"

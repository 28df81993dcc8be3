"""The models that ship in the package are found by name, carry their own contract and
segment a whole frame; a file of that name in the working directory still wins."""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.edge_runtime import Segmenter
from marsedge.edge_runtime.segmenter import BUNDLED_MODELS, DEFAULT_MODEL, model_path
from marsedge.train.synthetic import generate_frame


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_bundled_model_by_name_segments_a_1024_frame(name):
    segmenter = Segmenter(name, threads=1)
    assert segmenter.model_path == BUNDLED_MODELS[name] and segmenter.model_path.is_file()
    assert segmenter.metadata["input"]["model_pixels_per_frame"] == 128
    assert segmenter.metadata["model_name"] == f"marsedge-{name}"
    assert segmenter.metadata["precision"] == "int8-qat"
    frame = generate_frame(1024, 1024, seed=4)[0]
    result = segmenter.segment(frame)
    assert result.mask.shape == frame.shape and set(np.unique(result.mask)) <= {1, 2, 3, 4}


def test_a_local_file_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_path(None) == DEFAULT_MODEL and model_path("navcam") == DEFAULT_MODEL
    (tmp_path / "navcam").write_bytes(b"")
    assert model_path("navcam").resolve() == (tmp_path / "navcam").resolve()

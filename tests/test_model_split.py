"""A model file carries its split recipe: `marsedge eval` and `marsedge bench` score its own
test split from the data alone, and label scores on tiles it trained on.

The tiny test model is stamped with the recipe of a small synthetic tile file; the real
bundled model is checked against the shared data when it is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from marsedge.cli import app
from marsedge.core.errors import ModelError
from marsedge.core.metadata import embed_metadata, read_metadata, read_split_recipe, split_recipe

BUNDLED = Path(__file__).resolve().parents[1] / "marsedge" / "edge_runtime" / "models" / "marsedge_tiles_int8.tflite"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mars_terrain_64x128.npz"
QUICK = ["--threads", "1", "--runs", "1", "--warmup", "0", "--frame-runs", "0", "--no-rss", "--no-peak", "--json"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="marsedge")


@pytest.fixture(scope="module")
def tiles_npz(tmp_path_factory) -> Path:
    from marsedge.train.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("split_data") / "tiles.npz", 60, seed=3)


@pytest.fixture(scope="module")
def split_of(tiles_npz):
    """The split a run with default settings makes of ``tiles_npz``."""
    from marsedge.train.config import TrainConfig
    from marsedge.train.trainer import compute_split

    _, split, _, digest = compute_split(TrainConfig(data=str(tiles_npz)))
    return split, digest


@pytest.fixture(scope="module")
def stamped_model(tmp_path_factory, tiny_int8, tiles_npz, split_of) -> Path:
    """The tiny int8 model with the split recipe and fingerprint of ``tiles_npz``."""
    from marsedge.train.config import TrainConfig
    from marsedge.train.rundir import split_fingerprint

    split, digest = split_of
    content = tiny_int8.read_bytes()
    metadata = read_metadata(content)
    metadata["split"] = split_recipe(
        TrainConfig(data=str(tiles_npz)).to_dict(), str(tiles_npz), digest, {k: len(v) for k, v in split.items()}
    )
    metadata["source_split"] = split_fingerprint(split, digest)
    path = tmp_path_factory.mktemp("stamped") / "stamped_int8.tflite"
    path.write_bytes(embed_metadata(content, metadata))
    return path


def test_recipe_is_written_and_read_through_the_schema_module(stamped_model, tiles_npz):
    recipe = read_split_recipe(read_metadata(stamped_model))
    assert recipe["data_file"] == "tiles.npz" and recipe["seed"] == 0
    assert (recipe["val_fraction"], recipe["test_fraction"], recipe["clean"]) == (0.1, 0.1, True)
    with pytest.raises(ModelError, match="split.test_fraction"):
        read_split_recipe({"split": {**recipe, "test_fraction": 0.7}})
    with pytest.raises(ModelError, match="split must be an object"):
        read_split_recipe({"split": {"seed": 0}})


def test_eval_scores_the_models_own_test_split_by_default(stamped_model, tiles_npz, split_of):
    result = invoke("eval", stamped_model, "--data", tiles_npz, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    split, _ = split_of
    assert report["split"] == "test" and report["tiles"] == len(split["test"]) > 0
    assert report["trained_tiles"] == 0 and report["warning"] is None


@pytest.mark.parametrize("split", ["all", "train"])
def test_eval_on_training_tiles_is_loudly_labelled(stamped_model, tiles_npz, split_of, split):
    result = invoke("eval", stamped_model, "--data", tiles_npz, "--split", split)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    trained = len(split_of[0]["train"])
    assert first.startswith("WARNING: NOT A HELD-OUT SCORE:") and f"{trained} of these" in first


def test_eval_of_a_model_without_a_split_says_its_training_tiles_are_unknown(tiny_int8, tiles_npz):
    result = invoke("eval", tiny_int8, "--data", tiles_npz)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("WARNING: cannot tell which of these tiles the model trained on")
    refused = invoke("eval", tiny_int8, "--data", tiles_npz, "--split", "test")
    assert refused.exit_code == 2 and "needs the model's run directory or its split recipe" in refused.stderr


def test_eval_split_of_other_data_is_refused(stamped_model, tmp_path):
    from marsedge.train.synthetic import write_dataset

    other = write_dataset(tmp_path / "other.npz", 60, seed=4)
    result = invoke("eval", stamped_model, "--data", other, "--split", "test")
    assert result.exit_code == 2 and "is not tiles.npz, the model's training data" in result.stderr
    whole = invoke("eval", stamped_model, "--data", other, "--json")  # all tiles, labelled
    assert whole.exit_code == 0 and json.loads(whole.stdout)["split"] == "all"
    assert "cannot tell" in json.loads(whole.stdout)["warning"]


def test_a_split_that_does_not_reproduce_is_refused(tiny_int8, tiles_npz, split_of):
    from marsedge.train.config import TrainConfig

    split, digest = split_of
    metadata = read_metadata(tiny_int8)
    metadata["split"] = split_recipe(TrainConfig(data=str(tiles_npz)).to_dict(), str(tiles_npz), digest)
    metadata["source_split"] = {"data_sha256": digest, "train": "0" * 64, "val": "0" * 64, "test": "0" * 64}
    from marsedge.errors import DataError
    from marsedge.evaluation.evaluate import recipe_split

    with pytest.raises(DataError, match="differs from the one the model recorded"):
        recipe_split(metadata, tiles_npz)


def test_bench_scores_the_models_test_split_of_the_default_data(
    stamped_model, tiles_npz, split_of, tmp_path, monkeypatch
):
    monkeypatch.setattr("marsedge.cli.default_data_path", lambda *models: tiles_npz)
    result = invoke("bench", stamped_model, "--out", tmp_path, *QUICK)
    assert result.exit_code == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["split"] == "test" and settings["tiles"] == len(split_of[0]["test"])
    assert settings["trained_tiles"] == 0 and settings["warning"] is None
    assert "recomputed from the models' split recipe" in settings["tiles_from"]

    labelled = invoke("bench", stamped_model, "--split", "all", "--out", tmp_path, *QUICK)
    assert labelled.exit_code == 0, labelled.stderr
    assert "WARNING: NOT A HELD-OUT SCORE" in labelled.stderr
    assert json.loads(labelled.stdout)["settings"]["trained_tiles"] == len(split_of[0]["train"])


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data")
def test_bundled_model_reproduces_its_test_score_from_the_shared_data(monkeypatch):
    """`marsedge eval <bundled>` with no options: the shared file's test split, the score
    the model card quotes (int8 within a point of the float model's recorded test mIoU)."""
    monkeypatch.delenv("MARSEDGE_DATA", raising=False)
    result = invoke("eval", BUNDLED, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    recorded = read_metadata(BUNDLED)
    assert report["split"] == "test" and report["tiles"] == recorded["split"]["sizes"]["test"]
    assert report["trained_tiles"] == 0 and report["warning"] is None
    assert report["mean_iou"] == pytest.approx(recorded["metrics"]["source_test"]["mean_iou"], abs=0.01)
    assert np.isfinite(report["mean_iou"])

"""The shipped configs load, and the template lists every key at its default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marsedge.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.json")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads(path):
    config = TrainConfig.load(path)
    for teacher in config.teachers:  # the chain names runs by their config's name
        if teacher.startswith("runs/"):
            assert (CONFIGS / (teacher.removeprefix("runs/") + ".json")).is_file(), teacher


def test_template_is_every_key_at_its_default():
    template = json.loads((CONFIGS / "template.json").read_text())
    defaults = TrainConfig().to_dict()
    assert set(template) == set(defaults) and set(template["model"]) == set(defaults["model"])
    loaded = TrainConfig.load(CONFIGS / "template.json")
    assert loaded.replace(data="") == TrainConfig()

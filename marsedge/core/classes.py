"""The terrain classes: ids in masks, user-facing names, display colours.

Class 0 is "unlabeled": pixels the AI4Mars labellers left open (sky, rover, far field).
It is ignored by losses and metrics and, by default, never predicted. Files written
before the name settled call it "background"; :data:`LEGACY_NAMES` maps that on reading.
"""

from __future__ import annotations

from typing import Any

CLASS_NAMES = ("unlabeled", "soil", "bedrock", "sand", "big_rock")
UNLABELED, SOIL, BEDROCK, SAND, BIG_ROCK = range(len(CLASS_NAMES))
# RGB per class id (training preview, mask PNG palette, overlay tint).
CLASS_COLORS = ((0, 0, 0), (194, 150, 92), (120, 120, 140), (235, 205, 120), (200, 40, 40))
LEGACY_NAMES = {"background": "unlabeled"}


def class_entries() -> list[dict[str, Any]]:
    """The class table as the model metadata stores it: ``{id, name, color "#rrggbb"}``."""
    return [
        {"id": index, "name": name, "color": "#{:02x}{:02x}{:02x}".format(*CLASS_COLORS[index])}
        for index, name in enumerate(CLASS_NAMES)
    ]

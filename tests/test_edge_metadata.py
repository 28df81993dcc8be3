"""Metadata appended to the .tflite: round trip and clear errors."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from marsedge.edge_runtime import ModelError, embed_metadata, read_metadata
from marsedge.edge_runtime.metadata import class_table


def flatbuffer(path) -> bytes:
    data = path.read_bytes()
    return data[: data.rfind(b"PK\x03\x04")]


def test_round_trip_keeps_the_flatbuffer(tiny_int8):
    meta = read_metadata(tiny_int8)
    model = flatbuffer(tiny_int8)
    changed = dict(meta, name="renamed")
    embedded = embed_metadata(model, changed)
    assert embedded.startswith(model)
    assert read_metadata(embedded) == changed


def test_embedding_twice_replaces_instead_of_stacking(tiny_int8):
    meta = read_metadata(tiny_int8)
    once = embed_metadata(flatbuffer(tiny_int8), meta)
    twice = embed_metadata(once, dict(meta, name="second"))
    assert twice == embed_metadata(flatbuffer(tiny_int8), dict(meta, name="second"))
    assert read_metadata(twice)["name"] == "second"


def test_model_metadata_follows_the_contract(tiny_int8):
    meta = read_metadata(tiny_int8)
    assert meta["format"] == "marsedge-tflite/1"
    assert meta["output_classes"] == [1, 2, 3, 4]
    assert [c.id for c in class_table(meta)] == [0, 1, 2, 3, 4]
    assert meta["input"]["normalization"]["in_model"] is True


def test_colours_accept_hex_and_lists():
    meta = {"classes": [{"id": 1, "name": "a", "color": "#ff0001"}, {"id": 0, "name": "b", "color": [1, 2, 3]}]}
    assert [c.color for c in class_table(meta)] == [(1, 2, 3), (255, 0, 1)]


def zip_with(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, text)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (b"", "no marsedge metadata"),
        (zip_with("other.json", "{}"), "no marsedge.json"),
        (zip_with("marsedge.json", "{not json"), "corrupt marsedge.json"),
        (zip_with("marsedge.json", "[1, 2]"), "expected a JSON object"),
        (zip_with("marsedge.json", json.dumps({"format": "marsedge-tflite/1"})), "lacks name, input, classes"),
    ],
)
def test_missing_or_corrupt_metadata_raises_model_error(tiny_int8, suffix, message):
    with pytest.raises(ModelError, match=message):
        read_metadata(flatbuffer(tiny_int8) + suffix)


def test_output_classes_must_be_known_ids(tiny_int8):
    meta = dict(read_metadata(tiny_int8), output_classes=[1, 2, 9])
    with pytest.raises(ModelError, match="output_classes"):
        read_metadata(embed_metadata(flatbuffer(tiny_int8), meta))


def test_unreadable_path_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read model"):
        read_metadata(tmp_path / "missing.tflite")

"""Model faults through marsedge-run: one clear line naming the model, exit 1, no outputs.

Truncated files, a float model where int8 is expected, wrong input shape, missing or
corrupt metadata, another class count, bad ``input.scale``; and a fuzz of cut or
bit-flipped flatbuffers run in a child process (a native crash there must not take the
test suite down, and would show as a non-zero exit).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from marsedge.edge_runtime import ModelError, Segmenter, embed_metadata, read_metadata
from marsedge.edge_runtime.cli import app
from marsedge.edge_runtime.metadata import METADATA_NAME

ROOT = Path(__file__).resolve().parents[1]
CORRUPT_COPIES = max(40, int(os.environ.get("MARSEDGE_FUZZ_EXAMPLES", "40")))


def flatbuffer_of(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: data.rfind(b"PK\x03\x04")]


def with_metadata(model: Path, **changes) -> bytes:
    """``model`` with its metadata changed (a key set to None is removed)."""
    metadata = read_metadata(model)
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return embed_metadata(flatbuffer_of(model), metadata)


def zip_with(name: str, payload: bytes, compress_type: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), payload, compress_type=compress_type)
    return buffer.getvalue()


def run_model(model_bytes: bytes, tmp_path: Path, *extra: str):
    model = tmp_path / "model.tflite"
    model.write_bytes(model_bytes)
    result = CliRunner().invoke(
        app, [str(GOLDEN / "tile0.png"), "--out", str(tmp_path / "out"), "--model", str(model), *extra]
    )
    return result, model


def assert_one_model_line(result, model: Path, fragment: str, tmp_path: Path) -> None:
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {model}: ") and fragment in lines[0], lines
    assert not (tmp_path / "out").exists()


def _input(model: Path, **changes) -> dict:
    return dict(read_metadata(model)["input"], **changes)


CASES = {
    "empty-file": (lambda m: b"", "no marsedge metadata"),
    "truncated-half": (lambda m: m.read_bytes()[: len(m.read_bytes()) // 2], "no marsedge metadata"),
    "truncated-last-byte": (lambda m: m.read_bytes()[:-1], "no marsedge metadata"),
    "no-metadata": (lambda m: flatbuffer_of(m), "no marsedge metadata"),
    "truncated-flatbuffer": (
        lambda m: embed_metadata(flatbuffer_of(m)[:3000], read_metadata(m)),
        "not a TFLite model the interpreter can run",
    ),
    "metadata-not-json": (lambda m: flatbuffer_of(m) + zip_with(METADATA_NAME, b"{not json"), "corrupt marsedge.json"),
    "metadata-wrong-name": (lambda m: flatbuffer_of(m) + zip_with("other.json", b"{}"), "no marsedge.json"),
    "metadata-zip-bomb": (lambda m: flatbuffer_of(m) + zip_with(METADATA_NAME, b" " * 3_000_000), "above the"),
    "metadata-stored-corrupt": (
        lambda m: (flatbuffer_of(m) + zip_with(METADATA_NAME, b'{"format": 1}', zipfile.ZIP_STORED)).replace(
            b'{"format": 1}', b'{"format": 2}'
        ),
        "no marsedge metadata",
    ),
    "missing-keys": (lambda m: with_metadata(m, classes=None, output_classes=None), "lacks classes, output_classes"),
    "other-format": (lambda m: with_metadata(m, format="marsedge-tflite/9"), "unsupported metadata format"),
    "wrong-input-shape": (lambda m: with_metadata(m, input=_input(m, height=32)), "wrong input shape"),
    "other-class-count": (lambda m: with_metadata(m, output_classes=[1, 2, 3]), "wrong output shape"),
    "unknown-class-id": (lambda m: with_metadata(m, output_classes=[1, 2, 3, 9]), "must be ids listed in classes"),
    "scale-zero": (lambda m: with_metadata(m, input=_input(m, scale=0)), "input.scale"),
    "scale-negative": (lambda m: with_metadata(m, input=_input(m, scale=-0.5)), "input.scale"),
    "scale-text": (lambda m: with_metadata(m, input=_input(m, scale="half")), "input.scale"),
    "scale-bool": (lambda m: with_metadata(m, input=_input(m, scale=True)), "input.scale"),
    "scale-huge": (lambda m: with_metadata(m, input=_input(m, scale=1000)), "input.scale"),
    "normalization-zero-std": (
        lambda m: with_metadata(m, input=_input(m, normalization={"mean": 0, "std": 0, "in_model": False})),
        "positive std",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_is_one_clear_line(tiny_int8, tmp_path, case, record_property):
    record_property("tried", "model")
    make, fragment = CASES[case]
    result, model = run_model(make(tiny_int8), tmp_path)
    assert_one_model_line(result, model, fragment, tmp_path)
    record_property("passed", "model")


def test_float_model_runs_and_says_so_but_expect_int8_refuses_it(tiny_float32, tiny_int8, tmp_path, record_property):
    """The runtime supports float models (parity checks, debugging), so by default it runs
    one and reports its tensor type in every record; a pipeline that must run the
    quantised model says --expect-int8 and gets one clear line instead."""
    record_property("tried", "model")
    result, model = run_model(tiny_float32.read_bytes(), tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["model"]["tensor_type"] == "float32/float32" and record["model"]["precision"] == "float32"

    refused = tmp_path / "refused"
    refused.mkdir()
    result, model = run_model(tiny_float32.read_bytes(), refused, "--expect-int8")
    assert_one_model_line(
        result, model, "not an int8 model (--expect-int8): its input/output tensors are float32/float32", refused
    )

    result, model = run_model(tiny_int8.read_bytes(), tmp_path, "--expect-int8", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["model"]["tensor_type"] == "int8/int8"
    record_property("passed", "model")


def test_mislabelled_float_model_is_caught_by_expect_int8(tiny_float32, tmp_path):
    """Metadata that claims int8 does not fool the check: it reads the tensors."""
    result, model = run_model(with_metadata(tiny_float32, precision="int8-ptq"), tmp_path, "--expect-int8")
    assert_one_model_line(result, model, "metadata precision 'int8-ptq'", tmp_path)


def test_model_path_problems(tmp_path):
    for target, fragment in ((tmp_path / "missing.tflite", "cannot read model"), (tmp_path, "cannot read model")):
        result = CliRunner().invoke(
            app, [str(GOLDEN / "tile0.png"), "--out", str(tmp_path / "out"), "--model", str(target)]
        )
        assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1 and fragment in result.stderr


FLATBUFFER_FUZZ = r"""
import json, sys
import numpy as np
from marsedge.edge_runtime import ModelError, Segmenter
tile = np.arange(64 * 128, dtype=np.uint32).reshape(64, 128).astype(np.uint8)
for path in sys.argv[1:]:
    print(json.dumps({"path": path, "started": True}), flush=True)
    try:
        mask = Segmenter(path).segment(tile).mask
        outcome = "ok" if mask.shape == (64, 128) and set(np.unique(mask)) <= {1, 2, 3, 4} else "bad-mask"
    except ModelError as exc:
        outcome = "model-error" if str(exc) and "\n" not in str(exc) else "bad-message"
    except Exception as exc:
        outcome = f"escaped {type(exc).__name__}: {exc}"
    print(json.dumps({"path": path, "outcome": outcome}), flush=True)
"""


def damaged_flatbuffers(flatbuffer: bytes, count: int, seed: int = 5) -> list[bytes]:
    """``count`` damaged copies: cut at a random byte (odd ones) or 1-4 random bytes changed."""
    rng = np.random.default_rng(seed)
    copies = []
    for i in range(count):
        data = bytearray(flatbuffer)
        if i % 2:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 5))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        copies.append(bytes(data))
    return copies


def archive_of(model: bytes) -> bytes:
    return model[model.find(b"PK\x03\x04") :]


def test_damaged_models_are_refused_by_their_checksum(tiny_int8, tmp_path, record_property):
    """A model damaged after export (bad transfer, SD-card rot): the flatbuffer no longer
    matches the SHA-256 stored with the metadata, so it is refused before LiteRT parses it."""
    metadata = read_metadata(tiny_int8)
    original = flatbuffer_of(tiny_int8)
    archive = archive_of(embed_metadata(original, metadata))  # with flatbuffer.sha256
    for damaged in damaged_flatbuffers(original, CORRUPT_COPIES):
        if damaged == original:  # every "changed" byte got its old value back: not damaged
            continue
        record_property("tried", "model.damaged_checksum")
        with pytest.raises(ModelError, match="does not match the SHA-256 stored with its metadata"):
            Segmenter_from_bytes(damaged + archive)
        record_property("passed", "model.damaged_checksum")
    result, model = run_model(damaged_flatbuffers(original, 2)[1] + archive, tmp_path)
    assert_one_model_line(result, model, "corrupt model: its flatbuffer does not match the SHA-256", tmp_path)


def test_damaged_models_without_checksum_in_one_child_process(tiny_int8, tmp_path, record_property):
    """Models exported before the checksum existed: each damaged copy loads and segments,
    or fails with a one-line ModelError, in one child process (a native crash must not take
    the suite down, and shows as the child's exit code).

    The copies are seeded, so the outcome is the same on every run. LiteRT checks a
    flatbuffer's structure, not its contents: with other seeds about 1 in 200 damaged copies
    without a checksum aborts the process (SIGABRT in allocate_tensors). Models written by
    embed_metadata carry the checksum that prevents this (the test above)."""
    metadata = read_metadata(tiny_int8)
    legacy_archive = zip_with(METADATA_NAME, json.dumps(metadata).encode())  # no flatbuffer.sha256
    paths = []
    for i, damaged in enumerate(damaged_flatbuffers(flatbuffer_of(tiny_int8), CORRUPT_COPIES)):
        paths.append(tmp_path / f"m{i}.tflite")
        paths[-1].write_bytes(damaged + legacy_archive)
    proc = subprocess.run(
        [sys.executable, "-c", FLATBUFFER_FUZZ, *map(str, paths)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    outcomes = [json.loads(line) for line in proc.stdout.splitlines()]
    finished = {o["path"]: o["outcome"] for o in outcomes if "outcome" in o}
    for path in paths:
        record_property("tried", "model.damaged_no_checksum")
        if finished.get(str(path)) in ("ok", "model-error"):
            record_property("passed", "model.damaged_no_checksum")
    assert proc.returncode == 0, f"child died (rc {proc.returncode}) on {outcomes[-1] if outcomes else None}"
    assert all(finished[str(p)] in ("ok", "model-error") for p in paths), finished


def test_corrupt_tensor_names_are_a_model_error(tiny_int8, tmp_path):
    """A flipped byte in a tensor name made get_input_details() raise UnicodeDecodeError,
    which the CLI printed as a bare codec message without the model's path."""
    flatbuffer = bytearray(flatbuffer_of(tiny_int8))
    at = flatbuffer.find(b"serving_default_image")
    if at < 0:
        pytest.skip("the test model has no tensor named serving_default_image")
    flatbuffer[at] = 0x84
    model = tmp_path / "names.tflite"
    model.write_bytes(embed_metadata(bytes(flatbuffer), read_metadata(tiny_int8)))
    result = CliRunner().invoke(app, [str(GOLDEN / "tile0.png"), "--out", str(tmp_path / "out"), "--model", str(model)])
    assert_one_model_line(result, model, "corrupt model", tmp_path)


def test_segmenter_api_raises_model_error_for_every_case(tiny_int8):
    for case, (make, fragment) in CASES.items():
        with pytest.raises(ModelError, match=None) as caught:
            Segmenter_from_bytes(make(tiny_int8))
        assert fragment in str(caught.value), case


def Segmenter_from_bytes(data: bytes) -> Segmenter:  # noqa: N802 - reads like the class it builds
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as handle:
        handle.write(data)
        handle.flush()
        return Segmenter(handle.name)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
METADATA_KEYS = ["format", "name", "input", "classes", "output_classes", "precision", "marsedge_version"]
INPUT_KEYS = ["height", "width", "channels", "scale", "normalization", "pixel_range"]


@settings(max_examples=int(os.environ.get("MARSEDGE_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    top=st.dictionaries(st.sampled_from(METADATA_KEYS), JSON, max_size=2),
    inner=st.dictionaries(st.sampled_from(INPUT_KEYS), JSON, max_size=2),
    drop=st.lists(st.sampled_from(METADATA_KEYS), max_size=1),
)
def test_any_metadata_gives_a_segmenter_or_a_model_error(tiny_int8, record_property, top, inner, drop):
    """Metadata with any JSON in any field: the Segmenter loads and segments, or raises
    ModelError (a TypeError or KeyError from a bad field used to be possible)."""
    record_property("tried", "model.metadata_fuzz")
    metadata = read_metadata(tiny_int8)
    metadata["input"] = dict(metadata["input"], **inner)
    metadata.update(top)
    for key in drop:
        metadata.pop(key, None)
    try:
        segmenter = Segmenter_from_bytes(embed_metadata(flatbuffer_of(tiny_int8), metadata))
    except ModelError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        mask = segmenter.segment(np.zeros((10, 300), np.uint8)).mask
        assert mask.shape == (10, 300)
    record_property("passed", "model.metadata_fuzz")

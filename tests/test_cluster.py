"""marsedge batch on Ray: frame listing, resume rules and the extra (fast, no Ray needed),
then jobs on a local Ray instance (slow; skipped when the cluster extra is absent).

The Ray tests start one instance with ``ray start --head --block --num-cpus 2`` for the
module (stopped by signalling that process), and run ``marsedge batch`` as a separate
process against it: by address, with ``--address auto``, and with ``--address local``
(the command starts its own instance).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from marsedge.cluster import sizing
from marsedge.cluster.batch import Frame, is_complete, is_uri, list_frames
from marsedge.edge_runtime.batch import expand_inputs, output_stem

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"
FRAMES = 24
CORRUPT = "frame_corrupt.png"


def test_the_edge_install_pulls_no_ray():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("ray")]
    for extra, requirements in project["optional-dependencies"].items():
        if extra != "cluster":
            assert not [d for d in requirements if d.lower().startswith("ray")], extra
    assert any(d.startswith("ray[data,train]") for d in project["optional-dependencies"]["cluster"])
    assert "cluster" in (ROOT / "Makefile").read_text()


def test_without_ray_one_line_names_the_extra(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from marsedge.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    frame = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(frame)
    result = CliRunner().invoke(app, ["batch", str(frame), "--out", str(tmp_path / "out"), "--model", str(TINY)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "pip install -e '.[cluster]'" in lines[0] and "whl[cluster]'" in lines[0], result.output


def test_frames_are_listed_and_named_as_marsedge_run_does(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        for name in ("x.png", "y.jpg", "notes.txt"):
            (tmp_path / folder / name).write_bytes(b"")
    listing = tmp_path / "frames.txt"
    listing.write_text(f"# archive\n{tmp_path / 'b' / 'x.png'}\n\n{tmp_path / 'a' / 'y.jpg'}\n")
    sources = [str(tmp_path / "a"), str(listing), str(tmp_path / "nothing-*.png")]
    frames, problems = list_frames(sources)
    # marsedge-run's expansion and stems, in the same order
    expected_paths = [str(tmp_path / "a" / "x.png"), str(tmp_path / "a" / "y.jpg"), str(tmp_path / "b" / "x.png")]
    assert [f.path for f in frames] == expected_paths
    used: set[str] = set()
    assert [f.stem for f in frames] == [output_stem(Path(p), used) for p in expected_paths] == ["x", "y", "x-2"]
    assert problems == [(str(tmp_path / "nothing-*.png"), "no files match this pattern")]
    assert [str(p) for p in expand_inputs([str(tmp_path / "a")])[0]] == expected_paths[:2]
    empty = tmp_path / "empty.lst"
    empty.write_text("# nothing\n")
    assert list_frames([str(empty)]) == ([], [(str(empty), "the list of paths is empty")])
    assert is_uri("s3://bucket/a.png") and is_uri("gs://b/x") and not is_uri("file:///x") and not is_uri("/x.png")


def test_a_frame_is_complete_only_with_all_its_outputs(tmp_path):
    frame_path = tmp_path / "f.png"
    frame_path.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    frame = Frame(0, str(frame_path), "f")
    assert not is_complete(frame, out, overlay=False)
    (out / "f_mask.png").write_bytes(b"m")
    assert not is_complete(frame, out, overlay=False)  # no record: killed before it was written
    (out / "f.json").write_text("{not json")
    assert not is_complete(frame, out, overlay=False)
    (out / "f.json").write_text(json.dumps({"input": "elsewhere.png"}))
    assert not is_complete(frame, out, overlay=False)  # a record of another input
    (out / "f.json").write_text(json.dumps({"input": str(frame_path)}))
    assert is_complete(frame, out, overlay=False)
    assert not is_complete(frame, out, overlay=True)
    (out / "f_overlay.png").write_bytes(b"o")
    assert is_complete(frame, out, overlay=True)
    later = (out / "f.json").stat().st_mtime_ns + 10**9
    os.utime(frame_path, ns=(later, later))  # the frame changed after it was segmented
    assert not is_complete(frame, out, overlay=False)


def test_a_frame_done_with_other_settings_is_not_done(tmp_path):
    from marsedge.cluster.batch import frame_state

    frame_path = tmp_path / "f.png"
    frame_path.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    frame = Frame(0, str(frame_path), "f")
    settings = {"model_sha256": "a" * 64, "tta": False, "min_confidence": None}
    (out / "f_mask.png").write_bytes(b"m")
    (out / "f.json").write_text(json.dumps({"input": str(frame_path), "mask_settings": settings}))
    assert frame_state(frame, out, False, settings) == "done"
    for change in ({"model_sha256": "b" * 64}, {"tta": True}, {"min_confidence": 0.5}):
        assert frame_state(frame, out, False, {**settings, **change}) == "other settings"
    (out / "f.json").write_text(json.dumps({"input": str(frame_path)}))  # a record from before settings
    assert frame_state(frame, out, False, settings) == "other settings"
    (out / "f.json").write_text(json.dumps({"input": str(frame_path), "mask_settings": settings}))
    assert frame_state(frame, out, False, settings, confidence=True) == "todo"  # no confidence map yet
    (out / "f_confidence.png").write_bytes(b"c")
    assert is_complete(frame, out, False, settings, confidence=True)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--min-confidence", "2"], 2, "--min-confidence"),
        (["--bit-depth", "7"], 2, "--bit-depth"),
        (["--ignore-mask", "{tmp}/notes.txt"], 1, "--ignore-mask: not a PNG or JPEG image"),
        (["--model", "navcam-nope"], 1, "navcam-nope: cannot read model"),
    ],
)
def test_batch_option_errors_are_one_line_before_any_work(tmp_path, args, code, message):
    from typer.testing import CliRunner

    from marsedge.cli import app

    frame = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(frame)
    (tmp_path / "notes.txt").write_text("not a mask")
    argv = ["batch", str(frame), "--out", str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in args]]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_workers_times_threads_fill_the_cpus():
    assert sizing(8, None, None) == (8, 1)
    assert sizing(8, 2, None) == (2, 4)
    assert sizing(8, None, 4) == (2, 4)
    assert sizing(2, 4, None) == (4, 1)
    assert sizing(8, 3, 3) == (3, 3)


def test_an_actor_turns_a_bad_frame_into_a_row(tmp_path):
    """The actor class without Ray: segment_file per frame, errors as rows."""
    pytest.importorskip("pyarrow")
    import hashlib

    from marsedge.cluster.batch import SegmentFrames, result_schema
    from marsedge.edge_runtime import SegmenterOptions

    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 50), 120, np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    content = TINY.read_bytes()
    names = ["unlabeled", "soil", "bedrock", "sand", "big_rock"]
    actor = SegmentFrames(
        SegmenterOptions(model=TINY, threads=1),
        [hashlib.sha256(content).hexdigest(), content],
        str(tmp_path),
        False,
        None,
        names,
    )
    ok, failed = actor.one(0, str(good), "good"), actor.one(1, str(bad), "bad")
    assert ok["status"] == "segmented" and ok["error"] is None and (ok["width"], ok["height"]) == (50, 40)
    assert ok["model_sha256"] == hashlib.sha256(content).hexdigest()  # the full hash
    assert sum(ok[f"fraction_{n}"] for n in names) == pytest.approx(1.0)
    assert (tmp_path / "good_mask.png").is_file() and (tmp_path / "good.json").is_file()
    assert failed["status"] == "failed" and "corrupt PNG header" in failed["error"]
    assert not (tmp_path / "bad_mask.png").exists()
    assert set(ok) == set(failed) == set(result_schema(names).names)


# ---------------------------------------------------------------------------------------
# Jobs on a local Ray instance


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# One token for the processes of this session: `ray start` does not make one (ray.init does,
# in ~/.ray), so a fresh machine would otherwise refuse the first head.
RAY_TOKEN = os.environ.get("RAY_AUTH_TOKEN") or uuid.uuid4().hex


def _env() -> dict[str, str]:
    # token authentication on for every process (Ray does not turn it on for an explicit address)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def ray_head():
    """A Ray instance started by ``ray start --head`` (2 CPUs); its GCS address."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip("the ray command is not installed beside this Python")
    port = _free_port()
    process = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
         "--include-dashboard", "false", "--object-store-memory", "150000000", "--disable-usage-stats"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    deadline = time.monotonic() + 180
    try:
        for line in process.stdout:  # --block keeps it running; it says when the instance is up
            output.append(line)
            if "Ray runtime started" in line or time.monotonic() > deadline:
                break
        if process.poll() is not None or not any("Ray runtime started" in line for line in output):
            pytest.fail("ray start --head failed:\n" + "".join(output[-30:]))
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """FRAMES synthetic 1024x1024 frames (each 128 tiles at --scale 1: about half a second
    of work) and a corrupt PNG, plus marsedge-run's outputs for them."""
    from marsedge.train.synthetic import write_png_frames

    root = tmp_path_factory.mktemp("archive")
    frames = root / "frames"
    small = write_png_frames(root / "small", FRAMES, size=128, seed=7)
    frames.mkdir()
    for i, path in enumerate(small):
        big = np.kron(np.asarray(Image.open(path)), np.ones((8, 8), np.uint8))
        Image.fromarray(big).save(frames / f"frame_{i:02d}.png")
    shutil.rmtree(root / "small")
    (frames / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    reference = root / "marsedge_run"
    run = subprocess.run(
        [sys.executable, "-m", "marsedge.edge_runtime.cli", str(frames), "--out", str(reference), "--model", str(TINY),
         "--scale", "1", "--no-overlay"],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 1 and CORRUPT in run.stderr, run.stderr  # exit 1: the corrupt frame
    return frames, reference


def _batch(frames: Path, out: Path, *extra: str, wait: bool = True):
    command = [sys.executable, "-m", "marsedge.cli", "batch", str(frames), "--out", str(out), "--model", str(TINY),
               "--scale", "1", "--batch-size", "1", *extra]  # fmt: skip
    if not wait:
        return subprocess.Popen(
            command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)


def _outputs(out: Path) -> dict[str, int]:
    """Complete outputs (mask + record) and their modification times."""
    return {
        p.name: p.stat().st_mtime_ns
        for p in sorted(out.glob("*"))
        if not p.name.startswith(".") and p.suffix in (".png", ".json")
    }


def _table(out: Path):
    import pyarrow.parquet as pq

    return pq.read_table(out / "marsedge-batch.parquet").to_pylist()


@pytest.mark.slow
def test_a_killed_job_resumes_and_masks_match_marsedge_run(ray_head, archive, tmp_path):
    frames, reference = archive
    out = tmp_path / "out"
    job = _batch(frames, out, "--address", ray_head, "--workers", "2", wait=False)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("frame_*.json"))) < 3 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)  # the job's own process group: its driver
        job.wait()
    time.sleep(3)  # Ray ends the dead driver's actors
    before = {n: t for n, t in _outputs(out).items() if n.endswith(".json")}
    before.update({n: t for n, t in _outputs(out).items() if n.replace("_mask.png", ".json") in before})
    done_before = sum(1 for n in before if n.endswith(".json"))
    assert 3 <= done_before, "the job was killed before it segmented anything"

    rerun = _batch(frames, out, "--address", ray_head, "--workers", "2")
    assert rerun.returncode == 1, rerun.stderr  # the corrupt frame
    errors = [line for line in rerun.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and CORRUPT in errors[0] and "corrupt PNG header" in errors[0]
    assert re.search(rf"(\d+) segmented, {done_before} done earlier, 1 failed", rerun.stdout), rerun.stdout
    after = _outputs(out)
    assert {n: after[n] for n in before} == before  # nothing complete was written again
    masks = sorted(p.name for p in reference.glob("*_mask.png"))
    assert len(masks) == FRAMES and sorted(p.name for p in out.glob("*_mask.png")) == masks
    for name in masks:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(out.glob(".*.part"))  # no temporary left behind

    rows = _table(out)
    assert [r["path"] for r in rows] == [str(p) for p in expand_inputs([str(frames)])[0]]
    bad = [r for r in rows if r["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["path"].endswith(CORRUPT) and "corrupt PNG header" in bad[0]["error"]
    good = [r for r in rows if r["status"] != "failed"]
    assert sum(r["status"] == "done earlier" for r in good) == done_before
    for row in good:
        record = json.loads((reference / f"{row['stem']}.json").read_text())
        assert (row["width"], row["height"]) == (1024, 1024)
        assert row["fraction_soil"] == pytest.approx(record["class_fractions"]["soil"])
        assert row["model_sha256"] == record["model"]["sha256"] and row["total_ms"] > 0

    again = _batch(frames, out, "--address", ray_head)  # all done: nothing rewritten but the table
    assert f"0 segmented, {FRAMES} done earlier, 1 failed" in again.stdout, again.stdout
    assert {n: t for n, t in _outputs(out).items() if n in after} == after


@pytest.mark.slow
def test_address_auto_joins_the_instance_ray_start_started(ray_head, archive, tmp_path):
    frames, reference = archive
    some = tmp_path / "some.txt"
    some.write_text("".join(f"{frames / f'frame_{i:02d}.png'}\n" for i in range(3)))
    result = _batch(some, tmp_path / "out", "--address", "auto", "--workers", "1", "--overlay")
    assert result.returncode == 0, result.stderr
    assert "3 segmented, 0 done earlier, 0 failed" in result.stdout and "1 worker(s) x 2 thread(s)" in result.stdout
    for i in range(3):
        name = f"frame_{i:02d}_mask.png"
        assert (tmp_path / "out" / name).read_bytes() == (reference / name).read_bytes()
        assert (tmp_path / "out" / f"frame_{i:02d}_overlay.png").is_file()


@pytest.mark.slow
def test_the_command_starts_its_own_instance(archive, tmp_path):
    pytest.importorskip("ray")
    frames, reference = archive
    some = tmp_path / "some.txt"
    some.write_text(f"{frames / 'frame_05.png'}\n{frames / CORRUPT}\n")
    result = _batch(some, tmp_path / "out", "--address", "local", "--workers", "2")
    assert result.returncode == 1, result.stderr
    assert "1 segmented, 0 done earlier, 1 failed" in result.stdout, result.stdout
    name = "frame_05_mask.png"
    assert (tmp_path / "out" / name).read_bytes() == (reference / name).read_bytes()


@pytest.mark.slow
def test_a_rerun_with_another_model_or_option_rewrites_every_frame_as_marsedge_run(ray_head, tmp_path):
    """Done-ness is keyed on the model's SHA-256 and the mask options: another model (a
    path or a bundled name) or another --min-confidence segments every frame again, and the
    masks are then marsedge-run's for that model byte for byte."""
    from marsedge.train.synthetic import write_png_frames

    frames = tmp_path / "frames"
    write_png_frames(frames, 4, size=256, seed=11)
    out = tmp_path / "out"
    other = ROOT / "tests" / "data" / "tiny_float32.tflite"

    def batch(model, *extra):
        command = [sys.executable, "-m", "marsedge.cli", "batch", str(frames), "--out", str(out), "--model", str(model),
                   "--address", ray_head, "--workers", "1", *extra]  # fmt: skip
        return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)

    def reference(model, *extra):
        target = tmp_path / f"run_{Path(str(model)).stem}{''.join(extra)}"
        command = [sys.executable, "-m", "marsedge.edge_runtime.cli", str(frames), "--out", str(target),
                   "--model", str(model), "--no-overlay", *extra]  # fmt: skip
        assert subprocess.run(command, env=_env(), capture_output=True, timeout=600).returncode == 0
        return target

    def same_masks(target):
        masks = sorted(p.name for p in target.glob("*_mask.png"))
        assert len(masks) == 4
        return all((out / name).read_bytes() == (target / name).read_bytes() for name in masks)

    first = batch(TINY)
    assert first.returncode == 0 and "4 segmented, 0 done earlier" in first.stdout, first.stderr
    for model, extra in ((other, ()), ("navcam-tiles", ()), ("navcam-tiles", ("--min-confidence", "0.6"))):
        rerun = batch(model, *extra)
        assert rerun.returncode == 0, rerun.stderr
        assert "4 segmented, 0 done earlier" in rerun.stdout, rerun.stdout
        notes = [line for line in rerun.stderr.splitlines() if line.startswith("note:")]
        assert len(notes) == 1 and "4 frame(s)" in notes[0] and "segmented again" in notes[0]
        assert same_masks(reference(model, *extra))
    rows = _table(out)
    assert {r["model"] for r in rows} == {"navcam-tiles"} and {r["option_min_confidence"] for r in rows} == {0.6}
    assert all(len(r["model_sha256"]) == 64 and r["model_name"] == "marsedge-navcam-tiles" for r in rows)
    again = batch("navcam-tiles", "--min-confidence", "0.6")
    assert "0 segmented, 4 done earlier" in again.stdout and "note:" not in again.stderr
    assert {r["option_min_confidence"] for r in _table(out)} == {0.6}


# ---------------------------------------------------------------------------------------
# Training on Ray Train workers


def test_several_workers_scale_the_batch_and_the_learning_rate():
    from marsedge.cluster.train import scaled_config
    from marsedge.train.config import TrainConfig

    config = TrainConfig(batch_size=8, learning_rate=1e-3)
    four = scaled_config(config, 4)
    assert (four.batch_size, four.learning_rate) == (32, pytest.approx(2e-3))
    given = scaled_config(config, 4, learning_rate_given=True)
    assert (given.batch_size, given.learning_rate) == (32, 1e-3)


@pytest.mark.slow
def test_two_workers_train_a_loadable_run_laid_out_as_on_one_machine(tmp_path_factory, tmp_path):
    pytest.importorskip("ray")
    from _runs import make_tiny_run

    from marsedge.cluster import connect
    from marsedge.cluster.train import train_on_ray
    from marsedge.train import rundir

    one_machine = make_tiny_run(tmp_path_factory.mktemp("runs"))
    saved = rundir.read_run(one_machine).config
    config = saved.replace(out=str(tmp_path / "run"), epochs=2, batch_size=4)
    ray = connect("local", num_cpus=2)
    try:
        metrics = train_on_ray(config, workers=2)
    finally:
        ray.shutdown()
    out = tmp_path / "run"
    assert metrics["epochs_run"] == 2 and "2 workers" in metrics["device"]

    def layout(run):
        return {re.sub(r"\d+", "N", str(p.relative_to(run))) for p in run.rglob("*")}

    assert layout(out) == layout(one_machine)  # the same files (epoch numbers aside)
    run = rundir.read_run(out)
    assert (run.config.batch_size, run.config.learning_rate) == (8, pytest.approx(saved.learning_rate * 2**0.5))
    model = rundir.load_model(run)
    assert model.predict(np.zeros((1, *run.derived["input_shape"], 1), np.float32), verbose=0).shape[-1] == len(
        run.derived["output_classes"]
    )
    assert (tmp_path / ".run.ray").is_dir()  # Ray Train's checkpoints, beside the run


def test_a_restarted_worker_gets_the_last_epoch_back(tmp_path):
    """What rank 0 reports to Ray Train after an epoch restores a run directory a
    restarted worker resumes from: the state, its checkpoint, history and best weights."""
    from marsedge.cluster.train import _restore, _snapshot

    run = tmp_path / "run"
    (run / "checkpoints" / "epoch_0000").mkdir(parents=True)
    (run / "checkpoints" / "epoch_0001").mkdir()
    (run / "checkpoints" / "epoch_0001" / "ckpt.index").write_bytes(b"i")
    state = {"epoch": 1, "checkpoint": "checkpoints/epoch_0001/ckpt"}
    (run / "state.json").write_text(json.dumps(state))
    for name in ("config.json", "split.npz", "history.csv", "best.weights.h5", "preview.png"):
        (run / name).write_text(name)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    _snapshot(run, snapshot)
    assert not (snapshot / "checkpoints" / "epoch_0000").exists()  # the last checkpoint only
    restored = tmp_path / "restarted"
    _restore(snapshot, restored)
    assert json.loads((restored / "state.json").read_text()) == state
    assert (restored / "checkpoints" / "epoch_0001" / "ckpt.index").read_bytes() == b"i"
    assert (restored / "history.csv").read_text() == "history.csv"

"""The soak benchmark, shortened: flat memory, a report with both phases, and identical
masks from threads and processes. The full run (10,000 tiles, 200 frames) is
`python -m marsedge.benchmarks.soak`; its figures are in docs/reliability.md."""

from __future__ import annotations

import pytest

from marsedge.benchmarks import soak

pytestmark = pytest.mark.slow


def test_short_soak_is_flat_and_masks_agree_across_threads_and_processes(tiny_int8, record_property):
    record_property("tried", "soak")
    report = soak.soak(str(tiny_int8), tiles=300, frames=6, frame_size=256, threads=1, workers=2)
    assert [p["name"] for p in report["phases"]] == ["tiles", "frames 256x256"]
    assert [p["calls"] for p in report["phases"]] == [300, 6]
    # A leak of even one frame's buffers per call would show: 300 tiles x 32 KiB of logits.
    assert report["rss_mib"]["growth"] < 8, report["rss_mib"]
    parity = report["parity"]
    assert parity["shared_segmenter_threads"] and parity["segmenter_per_thread"] and parity["processes"], parity
    table = soak.table(report)
    assert "| tiles | 300 |" in table and "identical" in table and "DIFFERENT" not in table
    record_property("passed", "soak")


def test_command_line_writes_json(tiny_int8, tmp_path):
    out = tmp_path / "soak.json"
    assert soak.main(["--model", str(tiny_int8), "--tiles", "20", "--frames", "1", "--frame-size", "128",
                      "--workers", "0", "--json", str(out)]) == 0  # fmt: skip
    assert out.exists() and '"phases"' in out.read_text()

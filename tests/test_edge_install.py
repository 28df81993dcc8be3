"""The edge install on every board: an interpreter package for each CPU, and one clear
line when none imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marsedge.edge_runtime.interpreter import no_interpreter_message

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.mark.parametrize(
    "system, machine, interpreter",
    [
        ("Linux", "x86_64", "ai-edge-litert"),
        ("Linux", "aarch64", "ai-edge-litert"),  # 64-bit Raspberry Pi OS
        ("Darwin", "arm64", "ai-edge-litert"),
        ("Linux", "armv7l", "tflite-runtime"),  # 32-bit Raspberry Pi OS: no LiteRT wheel
    ],
)
def test_each_board_gets_one_interpreter_package(system, machine, interpreter):
    requirements = pytest.importorskip("packaging.requirements")
    environment = {"platform_system": system, "platform_machine": machine, "sys_platform": system.lower()}
    chosen = []
    for line in _requirements():
        requirement = requirements.Requirement(line)
        if requirement.name in ("ai-edge-litert", "tflite-runtime") and (
            requirement.marker is None or requirement.marker.evaluate(environment)
        ):
            chosen.append(requirement.name)
    assert chosen == [interpreter]


def test_the_message_names_the_package_for_the_cpu():
    assert no_interpreter_message("armv7l").endswith(
        "pip install tflite-runtime (LiteRT has no 32-bit ARM wheel; see docs/pi.md)"
    )
    assert no_interpreter_message("x86_64").endswith("pip install ai-edge-litert")


NO_INTERPRETER = """
import sys
for name in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
    sys.modules[name] = None  # as on a board where none is installed
from marsedge.edge_runtime.cli import main
sys.argv[0] = "marsedge-run"
main()
"""


def test_without_an_interpreter_marsedge_run_says_what_to_install(tmp_path):
    frame = tmp_path / "frame.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(frame)
    proc = subprocess.run(
        [sys.executable, "-c", NO_INTERPRETER, str(frame), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert "no TFLite interpreter" in lines[0] and "pip install" in lines[0]

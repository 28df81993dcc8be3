"""What ran a benchmark: CPU or board, cores, memory, OS, Python and package versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def describe_machine() -> dict[str, Any]:
    """What ran the benchmark: CPU, cores, memory, OS, Python and package versions, load."""
    from importlib import metadata

    from marsedge.edge_runtime.interpreter import interpreter_api

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    _, _, package = interpreter_api()
    cpu = cpu_model()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "interpreter": f"{package} {version(package.split('.')[0].replace('_', '-')) or ''}".strip(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def cpu_model() -> str:
    """The board (device tree) or CPU model name, for report headers."""
    for path in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
        try:
            board = Path(path).read_text(errors="replace").strip("\x00 \n")
            if board:
                return board
        except OSError:
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None

"""arm64 masks are bit-identical to x86_64 (reference kernels), under qemu-user.

Runs tools/arm64.sh (what `make test-arm64` runs): about 1.5 minutes the first time
(apt, debootstrap, wheels; needs network), under a minute with the .arm64/ cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAVE_TOOLS = bool(shutil.which("qemu-aarch64-static") and shutil.which("debootstrap"))
CAN_INSTALL = hasattr(os, "geteuid") and os.geteuid() == 0 and bool(shutil.which("apt-get"))


@pytest.mark.slow
@pytest.mark.skipif(not (HAVE_TOOLS or CAN_INSTALL), reason="qemu-user-static/debootstrap not installable here")
def test_arm64_reference_masks_match_x86():
    proc = subprocess.run(["bash", "tools/arm64.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "masks identical on x86_64 and arm64" in proc.stdout

#!/usr/bin/env bash
# `make test-arm64`: run marsedge-run on an emulated arm64 (aarch64) Python and check that
# its reference-kernel masks are bit-identical to the x86_64 ones.
#
# Builds (once, cached under .arm64/, gitignored) a minimal Debian bookworm arm64 root
# with python3.11, installs the base dependencies as aarch64 wheels next to a copy of
# the marsedge edge runtime, then runs `python3.11 -m marsedge.edge_runtime.cli
# --reference-kernels` under qemu-user on generated images (plus ../shared/data/samples
# when present, read in place) and compares with the same command on this machine.
# XNNPACK's optimised kernels crash under qemu; the builtin reference kernels work and
# are the ones that promise identical bits across architectures.
#
# Environment: X86_PYTHON (x86 interpreter, default .venv/bin/python), MODEL (a .tflite,
# default the bundled model), ARM64_CACHE (default .arm64).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${X86_PYTHON:-$REPO/.venv/bin/python}
CACHE=${ARM64_CACHE:-$REPO/.arm64}
ROOTFS=$CACHE/rootfs
SITE=$CACHE/site
IMAGES=$CACHE/images
SAMPLES=$REPO/../shared/data/samples
MODEL_ARGS=()
[ -n "${MODEL:-}" ] && MODEL_ARGS=(--model "$MODEL")

start=$SECONDS
step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - start)); }

step "tools"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "need qemu-aarch64-static and debootstrap (apt-get install qemu-user-static debootstrap, as root)" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi
mkdir -p "$CACHE"

step "arm64 root with python3.11"
if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
    rm -rf "$ROOTFS"
    # --foreign: download and unpack only, nothing runs inside the root (no binfmt needed).
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 bookworm "$ROOTFS" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # The first stage leaves --include packages in the apt cache: unpack them all.
    for deb in "$ROOTFS"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$ROOTFS"
    done
fi
ARM_PY=("qemu-aarch64-static" -L "$ROOTFS" "$ROOTFS/usr/bin/python3.11")
"${ARM_PY[@]}" -c 'import platform, sys; print("arm64 python", sys.version.split()[0], platform.machine())'

step "aarch64 wheels (same numpy, pillow, ai-edge-litert versions as x86)"
pins=$("$PYTHON" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in ("numpy", "pillow", "ai-edge-litert")))
EOF
)
stamp="$SITE/.pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "$pins typer" ]; then
    rm -rf "$SITE"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install -q --target "$SITE" --only-binary=:all: --python-version 311 --implementation cp \
        --platform manylinux_2_36_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \
        $pins typer 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$pins typer" >"$stamp"
fi
# The base package: the edge runtime only, so a stray import of training code fails here.
rm -rf "$SITE/marsedge"
mkdir -p "$SITE/marsedge"
cp marsedge/__init__.py "$SITE/marsedge/"
cp -r marsedge/edge_runtime "$SITE/marsedge/"
find "$SITE/marsedge" -name __pycache__ -prune -exec rm -rf {} +

step "images"
rm -rf "$IMAGES" "$CACHE/out-x86" "$CACHE/out-arm64"
mkdir -p "$IMAGES"
"$PYTHON" - "$IMAGES" <<'EOF'
import sys
import numpy as np
from PIL import Image

out = sys.argv[1]
rng = np.random.default_rng(64)
y, x = np.mgrid[0:300, 0:500]
smooth = 128 + 60 * np.sin(x / 23.0) * np.cos(y / 31.0)
Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)).save(f"{out}/generated_waves.png")
Image.fromarray(rng.integers(0, 256, (200, 260), dtype=np.uint8)).save(f"{out}/generated_noise.png")
EOF
inputs=("$IMAGES"/*.png)
for f in tests/data/golden/*.png; do
    case "$f" in *_mask.png) ;; *) inputs+=("$f") ;; esac
done
if compgen -G "$SAMPLES/*.png" >/dev/null; then inputs+=("$SAMPLES"/*.png); fi
echo "${#inputs[@]} images"

step "x86_64 run"
t0=$SECONDS
PYTHONPATH=$REPO "$PYTHON" -m marsedge.edge_runtime.cli --reference-kernels ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"} \
    --out "$CACHE/out-x86" "${inputs[@]}" | tail -1
x86_s=$((SECONDS - t0))

step "arm64 run under qemu"
t0=$SECONDS
PYTHONPATH=$SITE "${ARM_PY[@]}" -m marsedge.edge_runtime.cli --reference-kernels ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"} \
    --out "$CACHE/out-arm64" "${inputs[@]}" | tail -1
arm_s=$((SECONDS - t0))

step "compare"
"$PYTHON" - "$CACHE/out-x86" "$CACHE/out-arm64" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image

x86, arm = Path(sys.argv[1]), Path(sys.argv[2])
masks = sorted(x86.glob("*_mask.png"))
differ = [m.name for m in masks if not (arm / m.name).exists()
          or not np.array_equal(np.array(Image.open(m)), np.array(Image.open(arm / m.name)))]
fractions = [j.name for j in sorted(x86.glob("*.json"))
             if json.loads(j.read_text())["class_fractions"] != json.loads((arm / j.name).read_text())["class_fractions"]]
if not masks or differ or fractions:
    print(f"FAIL: {len(differ)} of {len(masks)} masks differ: {differ}; class fractions differ: {fractions}")
    sys.exit(1)
print(f"{len(masks)} masks identical on x86_64 and arm64 (reference kernels)")
EOF
echo "x86_64 run ${x86_s}s, arm64 run under qemu ${arm_s}s, total ${SECONDS}s"

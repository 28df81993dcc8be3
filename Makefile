# Two commands do everything on a fresh machine: `make demo` and `make test`.
# `make bench` regenerates the benchmark of the bundled models (benchmarks/, BENCHMARKS.md);
# `make wheel` builds dist/marsedge-*.whl to install on a board.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODELS := marsedge/edge_runtime/models

.PHONY: demo test lint test-slow test-arm64 bench wheel venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev,cluster,pds,ros]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m marsedge.demo

test: lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-arm64: $(STAMP)
	bash tools/arm64.sh

bench: $(STAMP)
	$(PY) -m marsedge.cli bench $(MODELS)/marsedge_float32.tflite $(MODELS)/marsedge_int8.tflite \
		--split test --threads 1,2 --corruption-frames 200 --out benchmarks --write-doc BENCHMARKS.md

# The installable package: dist/marsedge-<version>-py3-none-any.whl (bundled models included).
# `pip install dist/marsedge-*.whl` gives the board runtime; add `[train]` on a workstation.
# Needs only pip (no .venv): the build runs in an isolated environment.
wheel:
	rm -rf build
	$(PYTHON) -m pip wheel --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) demo_out .arm64 build dist

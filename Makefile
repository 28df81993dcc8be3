# Two commands do everything on a fresh machine: `make demo` and `make test`.
# `make figures` measures the bundled models into docs/figures.json and rewrites the documents'
# figures from it (README, MODEL_CARD, BENCHMARKS.md, docs/); `make bench` writes benchmarks/;
# `make wheel` builds dist/marsedge-*.whl to install on a board.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODEL_DIR := marsedge/edge_runtime/models

.PHONY: demo test lint test-slow test-arm64 bench figures figures-docs wheel venv clean

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

# The figures of record: every number the documents quote about the bundled models, measured into
# docs/figures.json (one entry per bundled model; MODELS=navcam-robust measures one and merges it),
# then the documents' generated sections and inline figures rewritten from it. About 8 minutes a
# model on 2 cores; `make figures-docs` only rewrites the documents.
figures: $(STAMP)
	$(PY) -m marsedge.benchmarks.figures $(if $(MODELS),--models $(MODELS))

figures-docs: $(STAMP)
	$(PY) -m marsedge.benchmarks.figures --docs-only

# Every bundled model measured as `make figures` does (test mIoU, big rock IoU with precision
# and recall, ms per 1024 frame at 1 and 2 threads, Raspberry Pi 4 estimate, size, memory,
# corruptions, calibration) into benchmarks/figures.json, and README's table of them printed
# with the CPU that measured it; docs/figures.json and the documents stay as they are.
bench: $(STAMP)
	$(PY) -m marsedge.benchmarks.figures --record benchmarks/figures.json --no-docs --table

# The installable package: dist/marsedge-<version>-py3-none-any.whl (bundled models included).
# `pip install dist/marsedge-*.whl` gives the board runtime; add `[train]` on a workstation.
# Needs only pip (no .venv): the build runs in an isolated environment.
wheel:
	rm -rf build
	$(PYTHON) -m pip wheel --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) demo_out .arm64 build dist

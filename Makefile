# sailvl2 developer entry points. Every target sets up what it needs first.
#   make demo   - chat about bundled images with the default model (CPU, offline)
#   make test   - the whole test suite
#   make nano   - generate the task suite, train the nano model from scratch, write runs/nano/report.md
#   make bench  - benchmarks/inference.py (prints a table, writes benchmarks/results/inference.json)
#   make bench-packing - benchmarks/packing.py (packed vs padded training; ~4 min, ~6 GB)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU torch first: a bare `torch` requirement can pull a multi-GB CUDA build. GPU users: install the
# CUDA build of torch into $(VENV) yourself (or pass TORCH_SPEC=...) before `make setup`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test nano bench bench-packing clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(PY) -m sailvl2.demo

test: setup
	$(PY) -m sailvl2._malloc -m pytest -q  # under mimalloc, as `sailvl2 train` runs (sailvl2/_malloc.py)

nano: setup
	$(PY) -m sailvl2.cli nano --out runs/nano

bench: setup
	$(PY) benchmarks/inference.py --json benchmarks/results/inference.json

bench-packing: setup
	$(PY) benchmarks/packing.py --json benchmarks/results/packing.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

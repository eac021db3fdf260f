PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
OUT ?= demo_out

.PHONY: demo test install install-dev lint clean gpu-check

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -q -e '.[dev,video]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/evtransfer demo --out $(OUT)

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

test: install-dev lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

# On a CUDA machine: the CUDA tests and every benchmark with --device cuda, < 8 minutes.
gpu-check: install-dev
	OMP_NUM_THREADS=4 $(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache

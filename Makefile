# ident3d: two commands for a fresh machine.
#   make demo   set up .venv, render a small pair dataset, train briefly, evaluate, print scores
#   make test   set up .venv, lint, then run the default test suite
# Other targets: test-slow (long tests), lint, format, bench-* (benchmarks: store, data, render,
# fidelity, modes, soak, train, eval), clean.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ident3d-installed
# Versions known to install here (local wheels); pyproject.toml itself only asks for ranges.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo-output

.PHONY: setup test test-slow test-all lint format demo bench-store bench-data bench-render \
        bench-fidelity bench-modes bench-soak bench-train bench-eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[render,dev]"
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m ident3d.demo --out $(DEMO_DIR)

bench-store: $(STAMP)
	$(BIN)/python benchmarks/bench_store.py

bench-data: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py

bench-render: $(STAMP)
	$(BIN)/python benchmarks/bench_render.py

bench-fidelity: $(STAMP)
	$(BIN)/python benchmarks/bench_fidelity.py

bench-modes: $(STAMP)
	$(BIN)/python benchmarks/mode_statistics.py

bench-soak: $(STAMP)
	$(BIN)/python benchmarks/bench_soak.py

bench-train: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py

bench-eval: $(STAMP)
	$(BIN)/python benchmarks/bench_eval.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache build *.egg-info

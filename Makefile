# One gate: `make test` (= `make check`) builds its own virtualenv and runs lint, types and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test check lint typecheck unit demo bench clean

help:
	@echo "make demo   - generate a Security Lake sample (both OCSF versions) and scan it"
	@echo "make test   - ruff, mypy and pytest in $(VENV) (created if missing)"
	@echo "make bench  - scan vs DuckDB / pyarrow / pandas on a 4M-row object"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check detector tests scripts benchmarks
	$(BIN)/ruff format --check detector

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

check: lint typecheck unit

test: check

demo: $(STAMP)
	PYTHONPATH=. $(BIN)/python scripts/demo.py

bench: $(STAMP)
	PYTHONPATH=. $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache .mypy_cache .ruff_cache *.egg-info

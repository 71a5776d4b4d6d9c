# One gate: `make test` (= `make check`) builds its own virtualenv and runs lint, types and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHECKOV := $(VENV)/checkov/bin/checkov
PYTHON_VERSION ?=

.PHONY: help venv test check lint typecheck template unit demo bench package build-DetectorFunction clean

help:
	@echo "make demo   - generate a Security Lake sample (both OCSF versions) and scan it"
	@echo "make test   - ruff, mypy and pytest in $(VENV) (created if missing)"
	@echo "make bench  - scan vs DuckDB / pyarrow / pandas on a 4M-row object, then the Lambda path on moto"
	@echo "make package - dist/lambda.zip for ARCH=arm64|x86_64 (PYTHON_VERSION defaults to the template's)"

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

# checkov pins old versions of shared libraries (packaging), so it lives in its own venv.
$(CHECKOV):
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet checkov

template: $(STAMP) $(CHECKOV)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/python scripts/check_template.py
	$(CHECKOV) -f template.yaml --framework cloudformation --skip-download --quiet --compact

unit: $(STAMP)
	$(BIN)/python -m pytest

check: lint typecheck template unit

test: check

demo: $(STAMP)
	PYTHONPATH=. $(BIN)/python scripts/demo.py

bench: $(STAMP)
	PYTHONPATH=. $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# Lambda package for the function's platform, built with pip --platform (no docker).
# Defaults: ARCH=arm64 (or template.yaml's Architectures), PYTHON_VERSION from template.yaml's
# Runtime. E.g. `make package ARCH=x86_64`. Needs only python3 >= 3.11 with pip.
package:
	$(PYTHON) scripts/package.py $(if $(ARCH),--arch $(ARCH)) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION))

# `sam build` runs this for `Metadata: BuildMethod: makefile`, with ARTIFACTS_DIR set.
build-DetectorFunction:
	$(PYTHON) scripts/package.py --artifacts-dir "$(ARTIFACTS_DIR)" $(if $(ARCH),--arch $(ARCH)) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION))

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist

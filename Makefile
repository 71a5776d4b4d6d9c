# One gate: `make test` (= `make check`) builds its own virtualenv and runs lint, types and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS ?= .tools
UV := $(TOOLS)/uv/bin/uv
# The project's venv is $(VENV); uv never downloads an interpreter; its cache is the user's.
UV_ENV := UV_PROJECT_ENVIRONMENT=$(abspath $(VENV)) UV_PYTHON_DOWNLOADS=never

CHECKOV := $(TOOLS)/checkov/bin/checkov
PYTHON_VERSION ?=

.PHONY: FORCE help venv lock locked test check lint typecheck template unit demo bench package build-DetectorFunction clean

help:
	@echo "make demo   - generate a Security Lake sample (both OCSF versions) and scan it"
	@echo "make test   - ruff, mypy and pytest in $(VENV) (created if missing)"
	@echo "make bench  - scan vs DuckDB / pyarrow / pandas on a 4M-row object, then the Lambda path on moto"
	@echo "make package - dist/lambda.zip for ARCH=arm64|x86_64 (PYTHON_VERSION defaults to the template's)"
	@echo "make lock   - refresh uv.lock and the tool locks to the newest allowed releases (then make test)"

# Everything installs from uv.lock (hashes included). uv itself comes from a hash-checked
# requirements file into its own small venv, so a bare machine needs only python3 >= 3.11.
# `uv sync --locked` fails loudly when uv.lock is out of date with pyproject.toml: run `make lock`.
$(UV): tools/uv-requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0])'
	test -x $(TOOLS)/uv/bin/python || $(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--require-hashes -r tools/uv-requirements.txt
	touch $(UV)

# Synced on every run (a no-op in milliseconds when nothing changed): the venv holds exactly
# the lock, whatever was installed into it by hand since.
$(STAMP): pyproject.toml uv.lock $(UV) FORCE
	@$(UV_ENV) $(UV) sync --locked --extra dev --python $(PYTHON) --quiet
	@touch $(STAMP)

FORCE:

venv: $(STAMP)

# Refresh the locks on purpose (newest releases allowed by pyproject.toml and its constraints),
# then run `make test`. Commit uv.lock, tools/checkov/uv.lock and tools/uv-requirements.txt alone.
lock: $(UV)
	$(UV_ENV) $(UV) lock --upgrade
	$(UV_ENV) $(UV) lock --upgrade --project tools/checkov
	$(UV_ENV) $(UV) export --frozen --only-group tools --no-emit-project --no-header \
		--format requirements-txt -o tools/uv-requirements.txt

# The installed environments match the locks exactly (nothing more, nothing less).
locked: $(STAMP) $(CHECKOV)
	$(UV_ENV) $(UV) sync --locked --extra dev --python $(PYTHON) --check
	$(UV_ENV) UV_PROJECT_ENVIRONMENT=$(abspath $(TOOLS))/checkov $(UV) sync --locked \
		--project tools/checkov --python $(PYTHON) --check
	$(UV_ENV) $(UV) lock --check
	$(UV_ENV) $(UV) export --frozen --only-group tools --no-emit-project --no-header \
		--format requirements-txt | diff -u tools/uv-requirements.txt - \
		|| { echo "tools/uv-requirements.txt is out of date with uv.lock: run make lock"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check detector tests scripts benchmarks
	$(BIN)/ruff format --check detector

typecheck: $(STAMP)
	$(BIN)/mypy

# checkov pins old versions of shared libraries (packaging), so it has its own lock and venv.
$(CHECKOV): tools/checkov/pyproject.toml tools/checkov/uv.lock $(UV)
	$(UV_ENV) UV_PROJECT_ENVIRONMENT=$(abspath $(TOOLS))/checkov $(UV) sync --locked \
		--project tools/checkov --python $(PYTHON)
	touch $(CHECKOV)

template: $(STAMP) $(CHECKOV)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/python scripts/check_template.py
	$(CHECKOV) -f template.yaml --framework cloudformation --skip-download --quiet --compact

unit: $(STAMP)
	$(BIN)/python -m pytest

check: locked lint typecheck template unit

test: check

demo: $(STAMP)
	PYTHONPATH=. $(BIN)/python scripts/demo.py

bench: $(STAMP)
	PYTHONPATH=. $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	PYTHONPATH=. $(BIN)/python benchmarks/allowlist_bench.py

# Lambda package for the function's platform, from the runtime part of uv.lock (no docker).
# Defaults: ARCH=arm64 (or template.yaml's Architectures), PYTHON_VERSION from template.yaml's
# Runtime. E.g. `make package ARCH=x86_64`. Needs only python3 >= 3.11 (uv is bootstrapped).
package: $(UV)
	$(UV_ENV) $(PYTHON) scripts/package.py --uv $(UV) $(if $(ARCH),--arch $(ARCH)) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION))

# `sam build` runs this for `Metadata: BuildMethod: makefile`, with ARTIFACTS_DIR set.
build-DetectorFunction: $(UV)
	$(UV_ENV) $(PYTHON) scripts/package.py --uv $(UV) --artifacts-dir "$(ARTIFACTS_DIR)" $(if $(ARCH),--arch $(ARCH)) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION))

clean:
	rm -rf $(VENV) $(TOOLS) .demo .bench .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist

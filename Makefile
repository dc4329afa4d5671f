# pets — two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test lint typecheck pytest bench docs system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# One stamp per set of extras, remade when pyproject.toml changes.
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[dev,hsm,vault,dask,plot,docs,bench]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/pets demo

# System packages pip cannot install (SoftHSM2 for the PKCS#11 tests). Installed when we are
# root with apt-get; otherwise the HSM tests skip with a message (and fail under CI=true).
system-deps:
	@if ! command -v softhsm2-util >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing softhsm2 (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null; \
	  else echo "softhsm2 not installed and not root: HSM tests will skip (apt-get install softhsm2)"; fi; \
	fi

lint: $(VENV)/.dev
	$(BIN)/ruff check pets tests benchmarks

typecheck: $(VENV)/.dev
	$(BIN)/mypy

pytest: $(VENV)/.dev system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest docs

bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks

docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache

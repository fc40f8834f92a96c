# Dispatchroom. `make run` serves the demo on http://127.0.0.1:8000; `make test` runs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCKHASH := $(shell cat requirements-dev.lock pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(LOCKHASH)
ADMIN_API_KEY ?= dr_dev_admin_key
PYTEST_ARGS ?= -n auto

.PHONY: install run test lint typecheck pytest bench format clean

$(STAMP): requirements-dev.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

## install: only create .venv/ with the pinned dependencies
install: $(STAMP)

## run: migrate the SQLite default, load demo data when empty, serve on 127.0.0.1:8000
run: install
	ADMIN_API_KEY=$(ADMIN_API_KEY) $(BIN)/dispatchroom serve --host 127.0.0.1 --port 8000 --demo

## test: lint, types, and every test on SQLite and PostgreSQL
test: lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy app

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: the benchmarks of bench/ (PostgreSQL; prints ratios measured in the same run)
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

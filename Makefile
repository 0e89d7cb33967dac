# Developer and CI entry points. `make test` is what CI runs (.ci/run).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup lint test test-fast bench

## setup: Debian packages (as root; otherwise lists what is missing), uv, and .venv
setup:
	bash scripts/setup.sh

## lint: ruff (lint and format) and mypy --strict
lint:
	@# A merge's leftovers (what pre-commit's check-merge-conflict catches) fail the build.
	@! git grep -n -E '^(<<<<<<<|>>>>>>>) ' -- . ':!*.lock'
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

## test: setup, lint, then the whole suite under coverage
# pytest's exit code 5 means "no tests collected"; that is not a failure here.
test: setup
	$(MAKE) --no-print-directory lint
	rm -f .coverage .coverage.*
	rc=0; COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage run -m pytest $(PYTEST_ARGS) || rc=$$?; \
	$(BIN)/coverage combine -q >/dev/null 2>&1 || true; \
	$(BIN)/coverage report || true; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; \
	exit $$rc

## test-fast: the quick tests only (no real sshd, Jupyter or namespaces)
test-fast:
	rc=0; $(BIN)/pytest -m "not e2e and not netns" $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; \
	exit $$rc

## bench: the benchmarks (root; BENCH_ARGS=--full for the issue's sizes); see benchmarks/README.md
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

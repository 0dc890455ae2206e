# The same targets .ci/run uses, for day-to-day work.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint fmt type ci bench demo

install:
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e '.[dev]'

test:
	$(BIN)/pytest

lint:
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

fmt:
	$(BIN)/ruff check --fix src tests examples
	$(BIN)/ruff format src tests examples

type:
	$(BIN)/mypy

ci:
	bash .ci/run

demo:
	$(BIN)/covey run examples/triage/app.py

bench:
	$(BIN)/covey bench

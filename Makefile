# The two commands: `make run` (serve the sample partnership on SQLite) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ACCORD := $(BIN)/accord
STAMP := $(VENV)/.installed

.PHONY: run test lint openapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(ACCORD) db upgrade
	$(ACCORD) agreements import policies/agreements
	$(ACCORD) serve

test: $(STAMP)
	$(BIN)/ruff check app tests migrations
	$(BIN)/ruff format --check app tests migrations
	$(BIN)/mypy app
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check app tests migrations
	$(BIN)/mypy app

openapi: $(STAMP)
	$(ACCORD) openapi > openapi.yaml

clean:
	rm -rf $(VENV) var

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

DEMO_KEY := var/demo.key

run: $(STAMP)
	mkdir -p var
	$(ACCORD) db upgrade
	$(ACCORD) agreements import policies/agreements
	test -s $(DEMO_KEY) || $(ACCORD) clients create --id local-demo-$$(date +%s) \
		--name "Local demo" --scopes decide:any,audit,manage \
		--agencies la.riverton.childrens-services --key-file $(DEMO_KEY)
	$(ACCORD) serve

test: $(STAMP)
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench
	$(BIN)/mypy app
	$(ACCORD) policy test policies/tests
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/mypy app

openapi: $(STAMP)
	$(ACCORD) openapi > openapi.yaml

clean:
	rm -rf $(VENV) var

# The two commands: `make run` (serve the sample partnership on SQLite) and `make test`
# (`make test-fast`: the in-process tests on SQLite alone, in under a minute).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ACCORD := $(BIN)/accord
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-system-packages lint openapi bench audit constraints clean

# The partner client (clients/python, distribution accord-client) too: tests/test_client.py uses it.
$(STAMP): pyproject.toml constraints.txt clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet -c constraints.txt -e ./clients/python
	touch $(STAMP)

# Re-resolve the ranges in pyproject.toml to their newest versions and freeze them.
constraints:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet -e ".[dev]" -e ./clients/python
	{ sed -n '1,2p' constraints.txt; $(VENV)-lock/bin/pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt && rm -rf $(VENV)-lock

DEMO_KEY := var/demo.key
SIGNING_KEY := var/audit-signing.key

run: $(STAMP)
	mkdir -p var
	$(ACCORD) db upgrade
	$(ACCORD) agreements import --if-empty policies/agreements  # seeds an empty database only
	test -s $(DEMO_KEY) || $(ACCORD) clients create --id local-demo-$$(date +%s) \
		--name "Local demo" --scopes decide:any,audit,manage \
		--agencies la.riverton.childrens-services --key-file $(DEMO_KEY)
	test -s $(SIGNING_KEY) || $(ACCORD) keys audit-signing create --out $(SIGNING_KEY)
	ACCORD_AUDIT_SIGNING_KEY_FILE=$(SIGNING_KEY) $(ACCORD) serve

# Debian packages the suite uses: PostgreSQL (throwaway servers), Chromium and its
# driver (the console's browser test), wrk (the HTTP benchmark's smoke run), nginx
# (the replica test's load balancer), kubectl (`kubectl kustomize deploy/k8s` in
# tests/test_deploy_manifests.py; Debian's is kubernetes-client), npm (bench.versus installs
# the Cerbos PDP from the npm registry).
test-system-packages:
	@missing=""; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	command -v kubectl >/dev/null || missing="$$missing kubernetes-client"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) test-system-packages
	$(BIN)/ruff check app tests migrations bench clients
	$(BIN)/ruff format --check app tests migrations bench clients
	$(BIN)/mypy app tests bench clients/python/accord_client
	$(BIN)/lint-imports
	$(ACCORD) policy test policies/tests
	$(BIN)/pytest

# The quick loop: no PostgreSQL, no Chromium, no `accord serve` process nor anything slow
# (pyproject.toml's pytest markers); `make test` runs everything on both backends.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not postgres and not browser and not slow"

lint: $(STAMP)
	$(BIN)/ruff check app tests migrations bench clients
	$(BIN)/mypy app tests bench clients/python/accord_client
	$(BIN)/lint-imports

# The performance benchmarks in one recorded run (a few minutes; not part of `make test`).
bench: $(STAMP) test-system-packages
	$(BIN)/python -m bench.all

# Known vulnerabilities in every locked distribution (constraints.txt). --strict: a
# distribution pip-audit cannot look up fails the run (without it: exit 0, nothing audited).
# Needs PyPI's per-version JSON API or OSV, which this workplace cannot reach: not in `test`.
audit: $(STAMP)
	$(BIN)/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r constraints.txt

openapi: $(STAMP)
	$(ACCORD) openapi > openapi.yaml

clean:
	rm -rf $(VENV) var

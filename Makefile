# make run: a working portal on http://127.0.0.1:5000 with demo users.  make test: the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
WITNESS_PORT ?= 5071
# Dependencies come from the hashed locks, never from a fresh resolve (README, "Dependencies and the lock").
RUNTIME_LOCK := requirements/runtime.txt
TEST_LOCK := requirements/test.txt
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.6.2
LOCK_VENV := .venv-lock
# `make lock` reads PyPI and nothing else: no pip configuration file, no index, find-links or constraint
# from the environment, so every hash in the locks is one PyPI serves.
PYPI_ONLY := env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_NO_INDEX \
	PIP_CONFIG_FILE=/dev/null
PIP_COMPILE := $(PYPI_ONLY) $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--build-deps-for=editable $(LOCK_ARGS)
DEV_ENV := instance/dev.env
# The dev secrets live in instance/dev.env; the addresses follow PORT (and WITNESS_PORT) so `make run PORT=8000`
# works too.
DEV := set -a && . ./$(DEV_ENV) && set +a && export PORTAL_EXTERNAL_URL=http://127.0.0.1:$(PORT) \
	PORTAL_OIDC_ISSUER=http://127.0.0.1:$(PORT)/devidp PORTAL_AUDIT_WITNESS_URL=http://127.0.0.1:$(WITNESS_PORT) &&
FLASK := $(DEV) $(BIN)/flask --app portal

.PHONY: run run-npm-idp test install install-test lock wrk browser nginx services oidc-provider bench screenshots lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/pip.txt

# Exactly what the lock lists, each file checked against its hash; then the portal itself, resolving nothing
# (the lock carries its build backend, so no unpinned setuptools is fetched either).
install: $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(RUNTIME_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

# Regenerates both locks from pyproject.toml, keeping every pin that still fits. Upgrade with
# `make lock LOCK_ARGS=--upgrade` (everything) or `LOCK_ARGS='--upgrade-package flask'` (one package).
lock:
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	@$(LOCK_VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		(echo "make lock resolves for the image's Python 3.11: rm -rf $(LOCK_VENV); make lock PYTHON=python3.11"; exit 1)
	$(PYPI_ONLY) $(LOCK_VENV)/bin/pip install --quiet pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	$(PIP_COMPILE) --extra=postgres --extra=test --output-file=$(TEST_LOCK) pyproject.toml
	$(PIP_COMPILE) --extra=postgres --constraint=$(TEST_LOCK) --output-file=$(RUNTIME_LOCK) pyproject.toml

# The audit witness runs beside the portal as a separate process (its key and state in instance/, never the
# database), trusting the log's key (`flask audit-log-key`); it is stopped when the portal stops. Both run in
# the background of one shell, whose trap turns Ctrl-C into SIGTERM for both (run.py stops gracefully on
# SIGTERM; background processes of a script ignore SIGINT).
WITNESS := $(BIN)/python -m audit witness --key instance/witness.key --state instance/witness-state.json \
	--port $(WITNESS_PORT) --log-key "$$($(BIN)/flask --app portal audit-log-key)"

run: install
	$(BIN)/python -m portal.devsetup
	$(FLASK) init-db
	$(FLASK) seed-demo
	$(DEV) { $(WITNESS) & witness=$$!; $(BIN)/python run.py --port $(PORT) & portal=$$!; \
		trap 'kill $$portal $$witness 2>/dev/null' INT TERM; wait $$portal; status=$$?; \
		kill $$portal $$witness 2>/dev/null; wait $$portal; wait $$witness; exit $$status; }

# The same portal signed in through the independent npm provider (single sign-on, acr, back-channel logout).
run-npm-idp: install-test oidc-provider
	$(BIN)/python -m portal.devsetup
	$(FLASK) init-db
	$(FLASK) seed-demo
	$(DEV) PORT=$(PORT) $(BIN)/python -m tests.support.npm_demo

oidc-provider:
	cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error

wrk:
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)

browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# tests/integration/deploy/test_nginx.py serves deploy/nginx.conf with a real nginx (Debian's; not started as a service).
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null)

# Without PORTAL_TEST_POSTGRES_URL / PORTAL_TEST_REDIS_URL the suite starts private PostgreSQL and Redis
# servers from these packages (tests/conftest.py); the machine's own services are not needed.
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
		command -v redis-server >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null)

# Three test processes (pytest-xdist), each test file on one of them, so a module's fixtures are built once:
# most tests wait on real servers and browsers, so a third process overlaps those waits on two cores.
# --no-loadscope-reorder keeps the collection order (slow modules first, tests/conftest.py) instead of
# xdist's default of files with the most tests first, which left the long few-test modules for the end.
TEST_PROCESSES ?= 3
test: install-test oidc-provider browser nginx services
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_PROCESSES) --dist loadfile \
		--no-loadscope-reorder \
		$(PYTEST_ARGS)

screenshots: install-test oidc-provider browser
	PORTAL_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/e2e -p no:cacheprovider

bench: install-test wrk
	$(BIN)/python bench/run_all.py

lint: install-test
	$(BIN)/ruff check portal audit tests bench run.py

clean:
	rm -rf $(VENV) $(LOCK_VENV) instance .pytest_cache

# make run: a working portal on http://127.0.0.1:5000 with demo users.  make test: the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
DEV_ENV := instance/dev.env
# The dev secrets live in instance/dev.env; the addresses follow PORT so `make run PORT=8000` works too.
DEV := set -a && . ./$(DEV_ENV) && set +a && export PORTAL_EXTERNAL_URL=http://127.0.0.1:$(PORT) \
	PORTAL_OIDC_ISSUER=http://127.0.0.1:$(PORT)/devidp &&
FLASK := $(DEV) $(BIN)/flask --app portal

.PHONY: run run-npm-idp test install install-test browser oidc-provider bench screenshots lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[postgres]'

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,postgres]'

run: install
	$(BIN)/python -m portal.devsetup
	$(FLASK) init-db
	$(FLASK) seed-demo
	$(DEV) $(BIN)/python run.py --port $(PORT)

# The same portal signed in through the independent npm provider (single sign-on, acr, back-channel logout).
run-npm-idp: install-test oidc-provider
	$(BIN)/python -m portal.devsetup
	$(FLASK) init-db
	$(FLASK) seed-demo
	$(DEV) PORT=$(PORT) $(BIN)/python -m tests.support.npm_demo

oidc-provider:
	cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error

browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: install-test oidc-provider browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

screenshots: install-test oidc-provider browser
	PORTAL_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/e2e -p no:cacheprovider

bench: install-test
	$(BIN)/python bench/run_all.py

lint: install-test
	$(BIN)/ruff check portal audit tests bench run.py

clean:
	rm -rf $(VENV) instance .pytest_cache

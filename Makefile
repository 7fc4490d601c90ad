# The two commands of the quick start: `make run` and `make test`.
# Everything is installed into .venv from pyproject.toml; nothing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The dashboard (web/): `npm ci` when the lock file changed, `npm run build` when a source
# did. The build goes to src/forecourt/dashboard/dist/, which the server serves at /.
WEB         := web
WEB_DEPS    := $(WEB)/node_modules/.installed
WEB_BUILD   := src/forecourt/dashboard/dist/.built
WEB_SOURCES := $(shell find $(WEB)/src -type f 2>/dev/null) \
               $(WEB)/index.html $(WEB)/vite.config.ts $(WEB)/tsconfig.json $(WEB)/package.json

.PHONY: run test lint typecheck bench clean install web web-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(WEB_DEPS): $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund
	touch $(WEB_DEPS)

$(WEB_BUILD): $(WEB_DEPS) $(WEB_SOURCES)
	cd $(WEB) && npm run build
	touch $(WEB_BUILD)

web: $(WEB_BUILD)

web-test: $(WEB_DEPS)
	cd $(WEB) && npm test

run: $(STAMP) $(WEB_BUILD)
	$(BIN)/forecourt serve

test: $(STAMP) $(WEB_BUILD) web-test
	scripts/install-test-tools.sh
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(WEB)/node_modules src/forecourt/dashboard/dist

# The README's commands: `make dev` runs the whole stack, `make test` runs every test.
# Both first make sure .venv holds what pyproject.toml asks for; the stamp keeps re-runs instant.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-from-pyproject
NPM_STAMP := node_modules/.installed-from-lock

.PHONY: dev test lint install

install: $(STAMP) $(NPM_STAMP)

# Re-installs whenever pyproject.toml changes; uv makes the no-change case take a second.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e '.[dev]'
	@touch $@

# The GC Design System, its fonts and axe-core come from npm and are served from this machine.
# --ignore-scripts: none of them needs an install script, and one would phone home.
$(NPM_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

dev: $(STAMP) $(NPM_STAMP)
	$(VENV)/bin/tellonce dev

test: $(STAMP) $(NPM_STAMP)
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

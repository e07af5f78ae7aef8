# The README's commands: `make dev` runs the whole stack, `make test` runs every test.
# Both first make sure .venv holds what pyproject.toml asks for; the stamp keeps re-runs instant.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-from-pyproject

.PHONY: dev test lint install

install: $(STAMP)

# Re-installs whenever pyproject.toml changes; uv makes the no-change case take a second.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e '.[dev]'
	@touch $@

dev: $(STAMP)
	$(VENV)/bin/tellonce dev

test: $(STAMP)
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

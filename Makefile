# Everything runs from a virtualenv that `make` creates from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint typecheck unit demo clean deploy-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check dispatcher handlers tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy dispatcher handlers

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# Offline checks of infra/template.yaml and serverless.yml (cfn-lint, sam validate, serverless@3 package,
# checkov); the tools get venvs of their own under .tools/, made on the first run. See infra/check.sh.
deploy-check: $(STAMP)
	bash infra/check.sh

demo: $(STAMP)
	$(BIN)/python -m dispatcher.demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

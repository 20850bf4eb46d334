# Everything runs from a virtualenv that `make` creates from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint typecheck unit demo clean bench deploy-check

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

# pushpool beside Prefect's server (installs Prefect into .bench/prefect-venv), then the other benchmarks
# that exist. `make bench BENCH_ARGS=--quick` for small sizes.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/vs_prefect/run.py $(BENCH_ARGS)
	@status=0; for s in dynamodb_cost cold_start dispatch_overhead; do \
		if [ -f benchmarks/$$s.py ]; then \
			echo "== benchmarks/$$s.py"; $(BIN)/python benchmarks/$$s.py || status=1; \
		fi; \
	done; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

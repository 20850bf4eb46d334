# Everything runs from a virtualenv that `make` creates from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint typecheck unit demo clean bench deploy-check prefect-import-test reliability lambda-lock

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check dispatcher handlers tests benchmarks
	$(BIN)/ruff format --check dispatcher handlers tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy dispatcher handlers

# The dashboard's browser tests drive Debian's Chromium through Playwright (tests/test_ui_browser.py); Playwright's
# own browser download is never used. Installed here on a fresh machine (CI runs as root).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

unit: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -rfEs   # -rfEs: failures, errors and each skipped test with why (e.g. no Prefect venv)

test: lint typecheck unit

# Offline checks of infra/template.yaml and serverless.yml (cfn-lint, sam validate, serverless@3 package,
# checkov); the tools get venvs of their own under .tools/, made on the first run. See infra/check.sh.
deploy-check: $(STAMP)
	bash infra/check.sh

# Re-pin the Lambda package's dependencies (infra/lambda/constraints.txt) after changing pyproject.toml.
lambda-lock:
	sh infra/build_lambda.sh --lock

demo: $(STAMP)
	$(BIN)/python -m dispatcher.demo

# pushpool beside Prefect's server (installs Prefect into .bench/prefect-venv), start latency beside Prefect's
# worker (benchmarks/latency.py: serve, the AWS functions on moto, Prefect), then the other benchmarks.
# cold_start.py runs in .bench/sdk-venv, which has every cloud extra, so its eager baseline imports every
# provider SDK. Every benchmark runs; the target fails if any missed a target (PASS/FAIL lines say which).
# `make bench BENCH_ARGS=--quick` for small sizes of the two Prefect comparisons.
BENCH_ARGS ?=
SDK_VENV   := .bench/sdk-venv
SDK_STAMP  := $(SDK_VENV)/.installed

$(SDK_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SDK_VENV)/bin/python -m pip install --quiet -e '.[aws,gcp,azure,modal]'
	touch $(SDK_STAMP)

bench: $(STAMP) $(SDK_STAMP)
	@failed=""; \
	run() { name=$$1; shift; echo "== $$name"; "$$@" || failed="$$failed $$name"; echo; }; \
	run vs_prefect $(BIN)/python benchmarks/vs_prefect/run.py $(BENCH_ARGS); \
	run latency $(BIN)/python benchmarks/latency.py $(BENCH_ARGS); \
	run dynamodb_cost $(BIN)/python benchmarks/dynamodb_cost.py; \
	run dispatch_overhead $(BIN)/python benchmarks/dispatch_overhead.py; \
	run cold_start $(SDK_VENV)/bin/python benchmarks/cold_start.py; \
	run dashboard_pages $(BIN)/python benchmarks/dashboard_pages.py; \
	run large_parameters $(BIN)/python benchmarks/large_parameters.py; \
	if [ -n "$$failed" ]; then echo "bench: targets missed in:$$failed"; exit 1; fi; \
	echo "bench: every target met"

# `pushpool import prefect` against a real `prefect server start` (tests/test_prefect_import_live.py). Prefect
# lives in .bench/prefect-venv (the venv vs_prefect uses), installed here when missing (a few minutes).
# `make test` runs the same test only when that venv already exists, and says it skipped it otherwise.
PREFECT_VENV := .bench/prefect-venv

prefect-import-test: $(STAMP)
	@$(PREFECT_VENV)/bin/python -c "import prefect" 2>/dev/null || { \
		echo "installing prefect>=3,<4 into $(PREFECT_VENV) (once) ..."; \
		$(PYTHON) -m venv $(PREFECT_VENV) && \
		$(PREFECT_VENV)/bin/python -m pip install --quiet "prefect>=3,<4"; }
	PUSHPOOL_PREFECT_LIVE=require PUSHPOOL_PREFECT_VENV=$(PREFECT_VENV) $(BIN)/pytest tests/test_prefect_import_live.py -v

# The reliability scenarios (tests/reliability/) at their large sizes; `make test` runs them bounded. Both print
# the table of figures and write it as JSON under pytest's basetemp. See README, "Reliability".
reliability: $(STAMP)
	RELIABILITY_SCALE=large $(BIN)/pytest tests/reliability tests/test_provider_conformance.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

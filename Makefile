# Skewless — `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
export FEAST_USAGE := False

# Extra test suites (their tests outside tests/): every target named test-NAME in this file.
# `make test` runs them after the main pytest run, .ci/run side by side. Adding one is one line:
#   test-faults: install ; $(BIN)/pytest suites/faults ## Fault injection: Redis killed, disk full
SUITES := $(shell sed -n 's/^\(test-[a-z0-9-]*\):.*/\1/p' $(firstword $(MAKEFILE_LIST)))

.DEFAULT_GOAL := help
.PHONY: help install demo test pytest suites lint bench bench-serve bench-skew bench-swap bench-catalog bench-monitor clean $(SUITES)

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/.installed ## Create the venv and install Skewless with its dependencies

demo: install ## Run the offline loop end to end (embedded Redis unless SKEWLESS_REDIS is set)
	$(BIN)/skewless demo

test: lint ## Lint and type-check, then run every test (starts its own servers)
	@$(MAKE) --no-print-directory pytest $(SUITES)

pytest: install ## Run the tests under tests/ alone (PYTEST_ARGS="-m 'not slow'" for the quick ones)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fuzz: install ## Fuzz every operation of the service's OpenAPI (schemathesis, real HTTP)
	$(BIN)/pytest suites/fuzz

test-faults: install ## Faults under load: Redis and PostgreSQL restarted, disk full, SIGKILL
	$(BIN)/pytest suites/faults

suites: ## List the extra test suites (the test-NAME targets)
	@echo $(SUITES)

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install ## Benchmarks: pipeline and training set at demo size and 10M transactions
	$(BIN)/python bench/offline.py

bench-serve: install ## Load benchmark: POST /predict vs tuned `feast serve` (installs wrk if missing)
	$(BIN)/python bench/serve.py

bench-skew: install ## Skew check over 100k served rows: wall time and peak RSS
	$(BIN)/python bench/skew.py

bench-swap: install ## Hot swap under load: promotion to first new-version response, throughput dip
	$(BIN)/python bench/swap.py

bench-catalog: install ## Catalog pages with 1,000 features; statistics refresh over 10M rows
	$(BIN)/python bench/catalog.py

bench-monitor: install ## skewless monitor over 1M logged rows: wall time and peak RSS
	$(BIN)/python bench/monitor.py

clean: ## Remove generated data, models and the venv
	rm -rf var feature_repo/data $(VENV)

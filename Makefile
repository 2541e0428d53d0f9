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
.PHONY: help install lock spark demo test pytest suites lint bench bench-serve bench-skew bench-swap bench-catalog bench-monitor bench-experiment bench-expectations bench-scale clean $(SUITES)

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# The exact versions, with their hashes, resolved from pyproject.toml's ranges for Python 3.11
# on x86_64 Linux by `make lock`: requirements.lock (with the dev extra) is what `make install`
# and CI install, requirements-runtime.lock (no extra, the same versions) what the image does.
# A heavy engine (Spark, MLflow) is an extra of its own, in neither lock; README.md
# ("Dependencies") shows how a team that needs one locks it and installs that lock (LOCK=…).
LOCK      ?= requirements.lock
LOCK_ARGS ?=
LOCK_FOR  := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes
UV        := $(BIN)/uv

# uv comes from the lock too: bootstrapped with the venv's pip, its wheel checked against the
# lock's hashes; it then makes the venv exactly the lock (removing what the lock does not
# hold) and adds Skewless itself, editable, built with the locked setuptools. The bytecode is
# compiled once here: where PYTHONDONTWRITEBYTECODE is set, every process (each `feast` or
# `skewless` command, each server a test starts) would otherwise compile Feast from source
# (about 5 s per process on the reference machine).
$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	awk '/^uv==/ { keep = 1; print; next } keep && /^ +--hash=/ { print; next } { keep = 0 }' \
	  $(LOCK) > $(VENV)/uv-requirement.txt
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(VENV)/uv-requirement.txt
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@

install: $(BIN)/.installed ## Create the venv and install the locked dependencies, then Skewless

lock: install ## Regenerate the locks from pyproject.toml (LOCK_ARGS=--upgrade: newest allowed)
	$(UV) pip compile --quiet pyproject.toml --extra dev $(LOCK_FOR) $(LOCK_ARGS) \
	  --custom-compile-command "make lock" --output-file requirements.lock
	$(UV) pip compile --quiet pyproject.toml $(LOCK_FOR) -c requirements.lock \
	  --custom-compile-command "make lock" --output-file requirements-runtime.lock
	$(UV) pip compile --quiet pyproject.toml --extra spark $(LOCK_FOR) -c requirements.lock \
	  --custom-compile-command "make lock" --output-file requirements-spark.lock

# The Spark extra on top of the installed lock: the same versions, plus pyspark and py4j
# (each checked against requirements-spark.lock's hashes). Spark runs on Java 17.
$(BIN)/.spark: $(BIN)/.installed requirements-spark.lock
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python --require-hashes \
	  -r requirements-spark.lock
	@touch $@

spark: $(BIN)/.spark ## Add the Spark extra (the cluster profile's engine) to the venv; needs Java 17

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

test-worker: install ## The worker on a served drift world: schedules, retries, two workers, SIGTERM
	$(BIN)/pytest suites/worker

test-spark: spark ## Both profiles on one small world: DuckDB vs Spark local[2], Redis vs Redis Cluster
	@command -v java >/dev/null || { echo "Spark needs Java 17 (Debian: openjdk-17-jre-headless)"; exit 1; }
	$(BIN)/pytest suites/spark

suites: ## List the extra test suites (the test-NAME targets)
	@echo $(SUITES)

lint: install ## ruff, mypy, and actionlint on .github/workflows (with shellcheck on their scripts, when installed)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/actionlint

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

bench-expectations: install ## Expectations over the 10M bench tables: wall, peak RSS, beside a duckdb scan
	$(BIN)/python bench/expectations.py

bench-scale: spark ## DuckDB + Redis vs Spark local[2] + Redis Cluster: training set, materialize (1M–10M)
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

bench-monitor: install ## skewless monitor over 1M logged rows: wall time and peak RSS
	$(BIN)/python bench/monitor.py

bench-experiment: install ## Search trials/min at demo size and 10M; best run's AUC vs fixed and Bayes
	$(BIN)/python bench/experiment.py $(BENCH_ARGS)

clean: ## Remove generated data, models and the venv
	rm -rf var feature_repo/data $(VENV)

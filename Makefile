# Retain — run `make help` for the targets.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
SYNC = $(UV) sync --all-packages --frozen --quiet

.DEFAULT_GOAL := help
REPLICAS ?= 1
.PHONY: help bootstrap browser run test test-fast test-resilience bench protos protos-check lint migrate

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

bootstrap: ## Install uv (from PyPI) if missing and sync the workspace
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(SYNC)

browser: ## Debian's Chromium + driver for the console browser test (skipped when they cannot be installed)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "chromium not installed: the console browser test will be skipped"; }

run: bootstrap ## Start the whole suite on the embedded default with demo data; REPLICAS=2 runs two of each (Ctrl-C stops)
	$(UV) run --frozen retain up --replicas $(REPLICAS)

test: bootstrap browser ## Unit, integration (PostgreSQL/Redis when RETAIN_DATABASE_URL/REDIS_URL are set) and e2e tests
	$(UV) run --frozen pytest -q

test-fast: bootstrap ## Unit tests only
	$(UV) run --frozen pytest -q -m "not e2e and not integration"

test-resilience: bootstrap ## Replica and fault-injection suites (minutes; PostgreSQL via RETAIN_DATABASE_URL for replicas)
	$(UV) run --frozen pytest -q tests/replicas tests/resilience

bench: bootstrap ## Run the benchmarks; prints a table and writes var/bench.json
	$(UV) run --frozen python -m tests.bench

protos: bootstrap ## Regenerate libs/api from protos/
	$(UV) run --frozen python scripts/gen_protos.py

lint: bootstrap ## ruff and mypy
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy libs/kit/src services/*/src gateway/src libs/cli/src

migrate: bootstrap ## Run every service's migrations on the configured databases
	$(UV) run --frozen retain migrate

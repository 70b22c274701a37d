# tasklab — `make` alone lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TASKLAB := $(BIN)/tasklab
STAMP := $(VENV)/.installed
export TASKLAB_DEVSTACK_DIR ?= $(CURDIR)/.tasklab/devstack
export NO_MKDOCS_2_WARNING := 1

.DEFAULT_GOAL := help
.PHONY: help setup system-deps test test-fast unit lint docs docs-serve demo clean \
        stage1-local stage1-up stage1-down stage1-logs stage1-test stage1-compose-check \
        stage2-local stage2-up stage2-down stage2-logs stage2-test \
        stage3-local stage3-up stage3-down stage3-logs stage3-test stage3-measure \
        stage4-local stage4-up stage4-down stage4-logs stage4-test

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

system-deps: ## Install the Debian packages the native stack needs (redis-server, zookeeper, JDK), and node
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	[ -x /usr/share/zookeeper/bin/zkServer.sh ] || missing="$$missing zookeeper"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml common/devstack/kafka_pom/pom.xml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[stage2,stage3,stage4,dev]'
	$(BIN)/python -m common.devstack.kafka fetch
	touch $@

# Mermaid's own parser, run on every diagram by tests/unit/test_diagrams.py (locked versions).
MERMAID_STAMP := tools/mermaid/node_modules/.installed
$(MERMAID_STAMP): tools/mermaid/package.json tools/mermaid/package-lock.json
	cd tools/mermaid && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The gRPC code is generated from proto/ (gitignored, never edited), again whenever the .proto
# or the generator changes.
GEN_STAMP := common/rpc/gen/__init__.py
$(GEN_STAMP): $(STAMP) proto/tasklab/v1/task_service.proto common/rpc/codegen.py
	$(BIN)/python -m common.rpc.codegen

setup: system-deps $(STAMP) $(GEN_STAMP) $(MERMAID_STAMP) ## Create .venv and install everything from nothing

test: setup ## Lint, unit + integration tests on real services, strict docs build
	$(MAKE) lint
	CI=$${CI:-} $(BIN)/pytest -q
	$(MAKE) docs

test-fast: setup ## Everything `make test` runs but the slow fault tests (pytest -m "not slow")
	$(MAKE) lint
	CI=$${CI:-} $(BIN)/pytest -q -m "not slow"

unit: $(STAMP) $(GEN_STAMP) ## Unit tests only (no services)
	$(BIN)/pytest -q tests/unit

lint: $(STAMP) $(GEN_STAMP) ## ruff lint + format check, import layering (contracts in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo --no-cache

docs: $(STAMP) ## Build the docs site strictly (site/)
	$(BIN)/mkdocs build --strict -q

docs-serve: $(STAMP) ## Serve the docs on http://127.0.0.1:8000
	$(BIN)/mkdocs serve

demo: setup ## Run the current platform natively and watch tasks flow through it
	$(BIN)/python -m common.demo

clean: ## Stop the dev stack and remove build output
	-$(TASKLAB) dev down
	rm -rf site .pytest_cache .ruff_cache

# ---- stage 1 -------------------------------------------------------------------------------
stage1-local: setup ## Stage 1 natively: Redis + 2 agents in the foreground (Ctrl-C stops)
	$(BIN)/python -m common.demo --stage 1 --serve

stage1-up: ## Stage 1 with Docker Compose (needs a Docker engine)
	docker compose -f stage1_mvp/compose.yaml up -d --build

stage1-down: ## Stop the stage 1 compose stack
	docker compose -f stage1_mvp/compose.yaml down -v

stage1-logs: ## Follow the stage 1 compose logs
	docker compose -f stage1_mvp/compose.yaml logs -f

stage1-test: setup ## Stage 1 integration tests
	$(BIN)/pytest -q tests/stage1_mvp tests/contract

# ---- stage 2 -------------------------------------------------------------------------------
stage2-local: setup ## Stage 2 natively: Redis + ZooKeeper, 2 schedulers, 3 agents (Ctrl-C stops)
	$(BIN)/python -m common.demo --stage 2 --serve

stage2-up: ## Stage 2 with Docker Compose (needs a Docker engine)
	docker compose -f stage2_coordination/compose.yaml up -d --build

stage2-down: ## Stop the stage 2 compose stack
	docker compose -f stage2_coordination/compose.yaml down -v

stage2-logs: ## Follow the stage 2 compose logs
	docker compose -f stage2_coordination/compose.yaml logs -f

stage2-test: setup ## Stage 2 integration tests (real ZooKeeper + Redis, faults injected)
	$(BIN)/pytest -q tests/stage2_coordination tests/unit/test_placement_strategies.py

# ---- stage 3 -------------------------------------------------------------------------------
stage3-local: setup ## Stage 3 natively: Redis, ZooKeeper, Kafka; 2 schedulers, 3 agents, manager
	$(BIN)/python -m common.demo --stage 3 --serve

stage3-up: ## Stage 3 with Docker Compose (needs a Docker engine)
	docker compose -f stage3_kafka/compose.yaml up -d --build

stage3-down: ## Stop the stage 3 compose stack
	docker compose -f stage3_kafka/compose.yaml down -v

stage3-logs: ## Follow the stage 3 compose logs
	docker compose -f stage3_kafka/compose.yaml logs -f

stage3-test: setup ## Stage 3 integration tests (real Kafka + ZooKeeper + Redis, faults injected)
	$(BIN)/pytest -q tests/stage3_kafka tests/contract tests/unit/test_bus_messages.py \
	  tests/unit/test_heartbeat_monitor.py tests/unit/test_pending_offsets.py \
	  -k "not stage1 and not stage2 and not stage4"

stage3-measure: setup ## What dispatch routing costs with 1, 3 and 6 agents (a markdown table)
	$(BIN)/python -m stage3_kafka.measure_dispatch --agents 1 3 6 --tasks 300

# ---- stage 4 -------------------------------------------------------------------------------
stage4-local: setup ## Stage 4 natively: the stage 3 platform plus 2 gRPC TaskService providers
	$(BIN)/python -m common.demo --stage 4 --serve

stage4-up: ## Stage 4 with Docker Compose (needs a Docker engine)
	docker compose -f stage4_rpc/compose.yaml up -d --build

stage4-down: ## Stop the stage 4 compose stack
	docker compose -f stage4_rpc/compose.yaml down -v

stage4-logs: ## Follow the stage 4 compose logs
	docker compose -f stage4_rpc/compose.yaml logs -f

stage4-test: setup ## Stage 4 integration tests (gRPC providers killed mid-call, on real services)
	$(BIN)/pytest -q tests/stage4_rpc tests/unit/test_rpc_codegen.py tests/unit/test_rpc_mapping.py

# ---- runbooks and exercises ------------------------------------------------------------------
.PHONY: runbooks exercise-stage1 exercise-stage2 exercise-stage3 exercise-solutions

runbooks: setup ## Run the stage READMEs as tests: their marked blocks, in order, on the native stack
	$(BIN)/pytest -q tests/unit/test_runbook.py tests/runbooks -m "not slow"

exercise-stage1: $(STAMP) ## Stage 1 exercises: tests that fail until your change is right
	$(BIN)/pytest -q exercises/stage1

exercise-stage2: $(STAMP) ## Stage 2 exercises: tests that fail until your change is right
	$(BIN)/pytest -q exercises/stage2

exercise-stage3: $(STAMP) ## Stage 3 exercises: tests that fail until your change is right
	$(BIN)/pytest -q exercises/stage3

exercise-solutions: $(STAMP) ## Every exercise against its reference solution (exercises/solutions/)
	TASKLAB_EXERCISE_SOLUTIONS=1 $(BIN)/pytest -q exercises

# ---- benchmarks ----------------------------------------------------------------------------
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[stage2,stage3,stage4,dev,bench]'
	touch $@

.PHONY: bench bench-quick
bench: setup $(BENCH_STAMP) ## tasklab vs Celery, full run (~45 min): table, JSON, docs plot
	$(BIN)/python -m bench --plot docs/assets/performance-latency.png $(BENCH_ARGS)

bench-quick: setup $(BENCH_STAMP) ## tasklab vs Celery, smoke run (a couple of minutes)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

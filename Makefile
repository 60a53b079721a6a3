# batchpipe — the two commands: `make dev` (run everything locally) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install kafka-jars lint typecheck test test-fast dev chaos bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

kafka-jars: install  ## resolve Apache Kafka's jars into the cache (once)
	$(BIN)/batchpipe kafka --fetch-only

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install  ## strict mypy over the package, the tests and the benchmarks
	$(BIN)/mypy --strict -p batchpipe
	$(BIN)/mypy --strict tests bench

test: install kafka-jars lint typecheck  ## everything CI runs
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install  ## unit tests only, no broker
	$(BIN)/pytest -m "not kafka and not slow" $(PYTEST_ARGS)

DEV_ARGS ?=

dev: install kafka-jars  ## run the whole pipeline locally: Kafka, emulator, ingest, dispatcher, poller
	$(BIN)/batchpipe dev $(DEV_ARGS)

CHAOS_ARGS ?=

chaos: install kafka-jars  ## reliability suite: kill/restart/fault every part; one table, fails on any loss
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

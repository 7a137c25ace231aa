# rtml — `make demo` and `make test` work as the first command on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rtml-installed
PYTEST_ARGS ?=
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint layers venv clean-state

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# the cluster test tier runs PostgreSQL: Debian's package, installed only if initdb is missing
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| ! command -v apt-get >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,postgres]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rtml demo

# The whole suite: the layer contract, then every tier (unit, data, model, integration, cluster).
# The cluster tier runs in its own process: Prefect's event worker and other process-wide clients
# it binds to its PostgreSQL-backed servers would outlive them and starve the other tiers' events.
test: layers
	$(BIN)/python -m pytest --ignore=tests/cluster $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests/cluster $(PYTEST_ARGS)

# Service-free tiers only (no broker, MLflow server, Prefect server or Spark stream).
test-fast: layers
	$(BIN)/python -m pytest tests/unit tests/data tests/model $(PYTEST_ARGS)

lint: layers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Layers point one way (pyproject.toml [tool.importlinter]): app > flows > engines > features > config.
layers: $(STAMP)
	$(BIN)/lint-imports --no-cache

clean-state:
	-$(BIN)/rtml down
	rm -rf .rtml

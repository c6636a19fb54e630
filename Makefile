# Both targets bootstrap their own virtual environment (.venv) from this repository.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: broker test lint bench compat fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.runtime

## Start a broker on localhost:9092 (data in ~/.local/share/pykbroker/data), configured by
## config/server.properties (CONFIG=other.properties for another file), with the web console on
## http://localhost:$(CONSOLE_PORT)/ (CONSOLE_PORT= to turn it off).
CONFIG ?= config/server.properties
CONSOLE_PORT ?= 9021
broker: $(VENV)/.runtime
	exec $(BIN)/pykbroker $(CONFIG) $(if $(CONSOLE_PORT),--override console.port=$(CONSOLE_PORT)) $(ARGS)

## Run the test suite (installs ZooKeeper for the cluster tests, Chromium for the console's browser
## tests, podman for the image tests and kcat and kafkajs for the compatibility matrix when
## missing and root, while the venv is made; includes a quick subset of the client compatibility
## matrix). Three xdist workers, a test file at a time, the slowest files first (tests/conftest.py).
test:
	@sh scripts/ensure-test-tools.sh & tools=$$!; \
	$(MAKE) --no-print-directory $(VENV)/.test; venv=$$?; wait $$tools; exit $$venv
	$(BIN)/ruff check protocol pykbroker tests compat-tests bench
	$(BIN)/pytest -q -n 3 --dist loadfile --no-loadscope-reorder

## The client compatibility matrix (all clients x all features); writes compat-tests/RESULTS.md.
compat: $(VENV)/.test
	@bash compat-tests/bootstrap.sh
	$(BIN)/python compat-tests/run.py $(ARGS)

## Benchmarks with ceilings measured in the same run; writes bench/RESULTS.md (ARGS=--quick).
bench: $(VENV)/.test
	$(BIN)/python -m bench.run $(ARGS)

## A long fuzz pass: 10^6 generated hostile frames against a fresh broker; writes fuzz-summary.json
## (ARGS="--frames N --seed S --seconds T", --case N replays one case; see tests/fuzzing/__main__.py).
fuzz: $(VENV)/.test
	PYTHONPATH=tests $(BIN)/python -m fuzzing --summary fuzz-summary.json $(ARGS)

lint: $(VENV)/.test
	$(BIN)/ruff check protocol pykbroker tests compat-tests bench
	$(BIN)/ruff format --check protocol pykbroker tests compat-tests bench

clean:
	rm -rf $(VENV) build *.egg-info

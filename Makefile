# The two README commands bootstrap .venv from nothing with the stdlib venv and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/irohpy demo

# Tests run inside a loopback-only network namespace when we can make one
# (root + unshare): nothing, not even the reference peer's port-mapping
# probes, can then leave the machine.
test: $(STAMP)
	scripts/loopback-only $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	scripts/loopback-only $(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis

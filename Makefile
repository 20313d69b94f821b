# The two README commands bootstrap .venv from nothing with the stdlib venv and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE := $(VENV)/.native
# The modules setup.py compiles with mypyc.
ENGINE := $(wildcard src/irohpy/quic/*.py) src/irohpy/endpoint/engine.py src/irohpy/endpoint/engine_socket.py \
	src/irohpy/socket/udp.py

.PHONY: demo test test-pure bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The editable install itself is plain Python; the compiled engine is built in place below,
# so that an edit recompiles only what changed (build/ keeps mypyc's C and the objects).
$(STAMP): $(BIN)/python pyproject.toml setup.py
	IROHPY_PURE=1 $(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The compiled engine (docs/build.md): its extensions go beside the sources in src/. Without a
# C compiler setup.py builds nothing and the plain Python runs. A source edited since the last
# build is never shadowed: irohpy._build checks the hashes and runs plain Python until `make`.
$(NATIVE): $(STAMP) $(ENGINE)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $(NATIVE)

demo: $(NATIVE)
	$(BIN)/irohpy demo

# Tests run inside a loopback-only network namespace when we can make one
# (root + unshare): nothing, not even the reference peer's port-mapping
# probes, can then leave the machine.
test: $(NATIVE)
	scripts/loopback-only $(BIN)/python -m pytest $(PYTEST_ARGS)

# The engine's and its driver's tests once more on plain Python (CI runs this after `test`).
test-pure: $(NATIVE)
	IROHPY_PURE=1 scripts/loopback-only $(BIN)/python -m pytest tests/test_quic*.py tests/test_tls*.py \
		tests/test_engine_socket.py tests/test_endpoint.py $(PYTEST_ARGS)

bench: $(NATIVE)
	scripts/loopback-only $(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis .mypy_cache src/irohpy/_native.json
	find src -name '*.so' -delete

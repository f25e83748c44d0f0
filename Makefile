# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing and installs the project (editable, with tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/insitu demo --out demo-output

# tests/warm_numba.py compiles the numba kernels on the core pytest leaves idle (see its docstring)
test: $(STAMP)
	@QT_QPA_PLATFORM=offscreen $(BIN)/python tests/warm_numba.py > /dev/null 2>&1 & \
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q; rc=$$?; wait; exit $$rc

test-slow: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/python -m compileall -q insitu drivers gui analysis tests bench
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q tests/test_layers.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache

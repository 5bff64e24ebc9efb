# Two commands from a fresh clone: `make demo` and `make test`. Both create the virtual environment and install
# everything on first use; the stamp file makes a second run install nothing (it reinstalls only when
# pyproject.toml or constraints.txt change).

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.pevl-installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo test install

demo: $(STAMP)
	$(BIN)/pevl demo

test: $(STAMP)
	. $(BIN)/activate && ruff check . && python -m pytest -q $(PYTEST_ARGS)

install: $(STAMP)

# torch first and pinned (constraints.txt keeps the resolver on it: a newer torch would pull CUDA packages);
# mediapipe without its declared requirements, which make pip backtrack for a long time (the `pose` extra
# brings the packages it really imports).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "torch==2.13.*" -c constraints.txt
	$(PIP) -e ".[pose,dev,export,hf]" -c constraints.txt
	$(PIP) --no-deps mediapipe==0.10.21
	touch $@

# Every target sets up what it needs in .venv on a machine that has only Python 3.11+.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test check bench install

$(PY):
	$(PYTHON) -m venv $(VENV)

# Editable installs: durable and durable.backends (the backends/ folder) import from the
# working tree. `install` uses setuptools' strict editable mode (a tree of links under build/,
# which mypy can follow) and refreshes it every time, so new modules are picked up.
EDITABLE := -e . --config-settings editable_mode=strict

$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(EDITABLE)
	touch $@

$(VENV)/.deps: pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=strict
	touch $@

install: $(VENV)/.deps
	$(PY) -m pip install -q --no-deps $(EDITABLE)

# Only what the demo needs: the runtime dependencies, no extras.
demo: $(VENV)/.runtime
	$(PY) examples/quickstart.py

# Several processes (pytest-xdist): most tests wait on subprocesses, timers and the database,
# so 4 workers finish well sooner than 2 even on a 2-core machine (plain `pytest`: one process).
test: install
	$(VENV)/bin/pytest -q -n 4 --dist worksteal

check: install
	$(VENV)/bin/ruff check durable backends tests examples benchmarks
	$(VENV)/bin/ruff format --check durable backends tests examples benchmarks
	$(VENV)/bin/mypy --strict durable backends tests/typing

# The side-by-side suite: durable, DBOS Transact and the raw floor (installs the bench extra).
bench: install
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/suite.py

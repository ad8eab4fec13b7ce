# Every target sets up what it needs in .venv on a machine that has only Python 3.11+.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test check bench install

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '.[test]'
	touch $@

# The package is installed as a wheel (backends/ becomes durable.backends), so reinstall it
# every time: quick, and the tests always see the working tree.
install: $(VENV)/.deps
	$(PY) -m pip install -q --no-deps --force-reinstall .

demo: install
	$(PY) examples/quickstart.py

test: install
	$(VENV)/bin/pytest -q

check: install
	$(VENV)/bin/ruff check durable backends tests examples benchmarks
	$(VENV)/bin/ruff format --check durable backends tests examples benchmarks
	$(VENV)/bin/mypy --strict durable backends tests/typing

# The side-by-side suite: durable, DBOS Transact and the raw floor (installs the bench extra).
bench: install
	$(PY) -m pip install -q '.[bench]'
	$(PY) -m pip install -q --no-deps --force-reinstall .
	$(PY) benchmarks/suite.py

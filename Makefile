# The README's commands. Each creates the virtualenv (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test lint format check clean constraints

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

constraints:                   ## pin what the venv has now (after a dependency upgrade)
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
	  | grep -v '^switchboard'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

up: $(BIN)/.installed          ## run the whole service with the demo config
	$(BIN)/switchboard up

test: $(BIN)/.installed        ## the whole test suite (real Redis, Celery workers, simulators)
	$(BIN)/python -m pytest

lint: $(BIN)/.installed        ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy webhooks worker config sandbox

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

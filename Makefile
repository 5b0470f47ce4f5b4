# The two commands of the README: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: install demo test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(PY) -m weakwater demo --out runs/demo

test: install lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check weakwater tests
	$(PY) -m ruff format --check weakwater tests

format: install
	$(PY) -m ruff format weakwater tests
	$(PY) -m ruff check --fix weakwater tests

clean:
	rm -rf runs .pytest_cache

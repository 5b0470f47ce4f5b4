# The two commands of the README: `make demo` and `make test` (`make test-fast` skips the slow tests). Both install what they need
# into .venv, torch first and pinned (an unpinned torch pulls several GB of CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: install install-dev demo test test-fast lint format clean

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e .
	touch $@

# dev adds the test clients; llamacpp compiles llama.cpp (about 12 min once, then pip's cache);
# tracking adds the optional experiment trackers so their offline tests run.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,llamacpp,tracking]"
	touch $@

demo: install
	$(PY) -m weakwater demo --out runs/demo

test: install-dev lint
	$(PY) -m pytest -q

# The edit-test loop: every test not marked slow, no lint. `make test` (and CI) still runs everything.
test-fast: install-dev
	$(PY) -m pytest -q -m "not slow"

lint: install-dev
	$(PY) -m ruff check weakwater tests
	$(PY) -m ruff format --check weakwater tests

format: install-dev
	$(PY) -m ruff format weakwater tests
	$(PY) -m ruff check --fix weakwater tests

clean:
	rm -rf runs .pytest_cache

# Entry points: `make run` trains on the built-in synthetic data, `make test` runs the tests,
# `make docs` builds the documentation site into site/.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test test-slow test-all lint format bench docs clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,birdnet,openvino,curation,analysis,docs]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) run.py $(ARGS)

test: install
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow -n 2 $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -m '' -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install
	$(PY) benchmarks/cache_speed.py $(ARGS)

docs: install
	$(PY) -m mkdocs build --strict -d site

clean:
	rm -rf outputs multirun site .pytest_cache .ruff_cache

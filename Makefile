# funcdl: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# PyTorch CPU build; 2.13.0 installs from local disk on the project's machines.
TORCH_VERSION ?= 2.13.0
# Data folder: $$FUNCDL_DATA_DIR, else ../shared/data where it exists (development), else ./data (`make data`).
DATA_DIR ?= $(or $(FUNCDL_DATA_DIR),$(if $(wildcard ../shared/data),../shared/data,data))
DATA_FLAG := $(if $(wildcard $(DATA_DIR)/mnist),--data-dir $(DATA_DIR))
PYTEST_ARGS ?= -n 2

.PHONY: setup demo test lint data bench bench-gpu clean readme-tables

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so the [torch] extra does not pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $@

# Trains the MNIST MLP (784-128-10, Adam 1e-3, batch 64, 10 epochs) on MNIST when it is found
# (DATA_DIR, $$FUNCDL_DATA_DIR or a prepared TFDS), else on scikit-learn's embedded digits.
demo: setup
	$(BIN)/funcdl train --model mlp --dataset auto $(DATA_FLAG) --epochs 10 --batch-size 64 \
		--optimizer adam --lr 1e-3 --seed 0

test: setup
	FUNCDL_DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/python -m pytest $(PYTEST_ARGS) -q

# Downloads MNIST's four IDX files into $(DATA_DIR)/mnist (checksum-verified); says so when offline.
data: setup
	$(BIN)/python -m funcdl.download $(DATA_DIR)

# Rewrites README's supported-layer tables from the lists `funcdl convert --list-supported` prints.
readme-tables: setup
	$(BIN)/python -c "from interop.cli import write_readme_tables; write_readme_tables('README.md')"

# ruff (lint and import order) and mypy (types), both configured in pyproject.toml.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/funcdl bench --suite cpu --quick

# The GPU benchmarks in one go (suite, MNIST speed run, bf16 vs fp32, 16-model sweep) and their goals;
# writes bench/results/gpu-DATE-*. `bash bench/gpu.sh --dry-run` runs the same plan on the CPU, tiny.
bench-gpu: setup
	FUNCDL_DATA_DIR=$(abspath $(DATA_DIR)) PYTHON=$(BIN)/python bash bench/gpu.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Set-up and entry points. `make run` and `make test` work on a fresh machine: they create .venv,
# install the suite (editable, so methods/ is found beside bench/), then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup run test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	bash scripts/install_system_deps.sh $(VENV)
	touch $@

# The default grid on the embedded real data (mnist5k): tables in results/, figures in results/figures/.
run: setup
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default

# Tests that need real on-disk data (the CIFAR-10 JPEG tree) read it from here and skip when it is absent.
BENCH_DATA_DIR ?= $(abspath ../shared/data)

# The code's format and lint (ruff, configured in pyproject.toml) first: CI keeps the code formatted.
test: setup
	$(BIN)/ruff check bench methods tests scripts
	$(BIN)/ruff format --check bench methods tests scripts
	BENCH_DATA_DIR=$(BENCH_DATA_DIR) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .snakemake results/runs results/logs results/benchmarks

# Set-up and entry points. `make run` and `make test` work on a fresh machine: they create .venv,
# install the suite (editable, so methods/ is found beside bench/), then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup run test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The default grid on the embedded real data (mnist5k): tables in results/, figures in results/figures/.
run: setup
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .snakemake results/runs results/logs results/benchmarks

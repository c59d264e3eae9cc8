# Set-up and entry points. `make run` and `make test` work on a fresh machine: they create .venv,
# install the suite (editable, so methods/ is found beside bench/), then run.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# Tests that need real on-disk data (the CIFAR-10 JPEG tree) read it from here and skip when it is absent.
BENCH_DATA_DIR ?= $(abspath ../shared/data)
# These four, when they come from the environment or the command line, are data (issue 26): taken as
# written (make does not expand a `$(...)` in them) and checked before any recipe runs, as the recipes
# hand them to a shell; a bad one stops make with one line naming it (exit 2).
OUTSIDE := $(foreach name,PYTHON VENV CORES BENCH_DATA_DIR,$(if $(filter environment command,$(firstword $(origin $(name)))),$(name)))
$(foreach name,$(OUTSIDE),$(eval override $(name) := $$(value $(name))))
# $(call without,TEXT,CHARACTERS): TEXT with every one of CHARACTERS (single characters) taken out
without = $(if $(2),$(call without,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,99,$(2))),$(1))
DIGITS := 0 1 2 3 4 5 6 7 8 9
PATH_CHARS := $(DIGITS) a b c d e f g h i j k l m n o p q r s t u v w x y z \
	A B C D E F G H I J K L M N O P Q R S T U V W X Y Z / . _ - + @ : ~
ifneq ($(filter CORES,$(OUTSIDE)),)
ifneq ($(CORES),all)
ifneq ($(words $(CORES))$(call without,$(CORES),$(DIGITS))$(filter 0%,$(CORES)),1)
$(error CORES='$(CORES)': accepted: a whole number >= 1 (digits only) or all)
endif
endif
endif
$(foreach name,$(filter-out CORES,$(OUTSIDE)),$(if $(filter-out 1,$(words $($(name))))$(call without,$($(name)),$(PATH_CHARS))$(findstring /-,/$($(name))),\
	$(error $(name)='$($(name))': accepted: a path of letters, digits and /._-+@:~ (no part starting with '-'))))
BIN := $(VENV)/bin

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

# pyproject.toml's `biotorch` extra, installed without its dependencies (their resolution does not finish),
# once; where pip fails (no network) tests/test_biotorch_diff.py skips and the rest runs.
BIOTORCH := $(shell sed -n 's/^biotorch = \["\(biotorch==[^"]*\)"\]/\1/p' pyproject.toml)
$(VENV)/.biotorch: $(VENV)/.installed pyproject.toml
	@test -n '$(BIOTORCH)' || { echo "Makefile: no line 'biotorch = [\"biotorch==...\"]' in pyproject.toml"; exit 1; }
	$(BIN)/pip install --quiet --no-deps "$(BIOTORCH)" || echo "biotorch not installed: tests/test_biotorch_diff.py skips"
	touch $@

# The code's format and lint (ruff, configured in pyproject.toml) first: CI keeps the code formatted.
test: setup $(VENV)/.biotorch
	$(BIN)/ruff check bench methods tests scripts
	$(BIN)/ruff format --check bench methods tests scripts
	BENCH_DATA_DIR=$(BENCH_DATA_DIR) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .snakemake results/runs results/logs results/benchmarks

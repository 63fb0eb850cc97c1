# Two front doors for a newcomer:  `make demo` (set up + tiny pipeline) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench perf faults clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## run the whole pipeline on the tiny profile (generated data, CPU, minutes)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --profile workflow/profiles/tiny all
	@echo; echo "Tables:  $(CURDIR)/results/synthetic/tables/"; ls results/synthetic/tables
	@echo "Figures: $(CURDIR)/results/synthetic/figures/"; ls results/synthetic/figures

test: setup  ## every test, the slow end-to-end ones included
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -m "not slow"

bench: setup  ## wall time of the tiny profile, end to end
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/tiny_wall_time.py

PERF_ARGS ?= --quick --tree .
perf: setup  ## speed figures (benchmarks/README.md); PERF_ARGS="--tree ." for the paper grid at 224 px (~30 min on 2 cores)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/perf.py $(PERF_ARGS)

FAULTS_ARGS ?=
faults: setup  ## SIGKILL the tiny pipeline at 10 seeded moments (+3 for dvc repro), check what survives (~1 h on 2 cores); FAULTS_ARGS=--quick for 2+1
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/faults.py $(FAULTS_ARGS)

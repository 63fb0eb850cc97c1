# Two front doors for a newcomer:  `make demo` (set up + tiny pipeline) and `make test`.
# The interpreter: PY=/path/to/python overrides; otherwise the first of these that runs and is a
# version pyproject.toml's requires-python allows (3.11 to 3.13). 3.11 comes first because this
# machine's PyTorch wheels are built for it. Each candidate is run, not just found: a pyenv shim
# exists for every installed version but fails for those not selected.
PY_CANDIDATES := python3.11 python3.12 python3.13 python3 python
PY_OK := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
PY ?= $(shell for p in $(PY_CANDIDATES); do $$p -c '$(PY_OK)' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast results bench perf faults clean-results which-python

which-python:  ## the interpreter `make setup` would build .venv with
	@test -n "$(PY)" || { echo "no Python 3.11 to 3.13 found (tried: $(PY_CANDIDATES)); install one or pass PY=/path/to/python" >&2; exit 1; }
	@echo $(PY)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PY)" || { echo "no Python 3.11 to 3.13 found (tried: $(PY_CANDIDATES)); install one or pass PY=/path/to/python" >&2; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## run the whole pipeline on the tiny profile (generated data, CPU, minutes)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --profile workflow/profiles/tiny all
	@echo; echo "Tables:  $(CURDIR)/results/synthetic/base/tables/"; ls results/synthetic/base/tables
	@echo "Figures: $(CURDIR)/results/synthetic/base/figures/"; ls results/synthetic/base/figures

test: setup  ## every test, the slow end-to-end ones included
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -m "not slow"

results: setup  ## the README's headline results and docs/results.md's current tables, from the runs published in docs/runs/ (cfgan publish)
	$(BIN)/cfgan results-tables --runs docs/runs --readme README.md --results-md docs/results.md

bench: setup  ## wall time of the tiny profile, end to end
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/tiny_wall_time.py

PERF_ARGS ?= --quick --tree .
perf: setup  ## speed figures (benchmarks/README.md); PERF_ARGS="--tree ." for the paper grid at 224 px (~30 min on 2 cores)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/perf.py $(PERF_ARGS)

FAULTS_ARGS ?=
faults: setup  ## SIGKILL the tiny pipeline at 10 seeded moments (+3 for dvc repro), check what survives (~1 h on 2 cores); FAULTS_ARGS=--quick for 2+1
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/faults.py $(FAULTS_ARGS)

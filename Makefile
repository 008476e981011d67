# Two commands set everything up on a fresh machine (each creates .venv if missing and installs):
#   make test        run the test suite
#   make reproduce   train (or reuse) the mainline, then measures, figures, runs/mainline/report.html
# Also: make reproduce-pair (Pearce et al.'s explorable: runs/pair2023/report.html), make reproduce-phase-changes
# (Nanda's Alignment Forum post: runs/phase-changes/report.html), make train (training only), make test-slow (long end-to-end checks), make bench, make lint.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Torch threads for training (docs/training.md: 1 never collapses on a shared machine; 2 is ~1.7x faster on an idle one).
THREADS ?= 1

.PHONY: install test test-slow train reproduce reproduce-pair reproduce-phase-changes bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

# One test file per process, as many processes as CPUs (each test runs at one torch thread).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

train: $(STAMP)
	$(BIN)/mechgrok train --out runs/mainline --threads $(THREADS)

reproduce: $(STAMP)
	$(BIN)/mechgrok reproduce --threads $(THREADS)

# Pearce et al.'s explorable: every experiment as a sweep on all CPUs, runs/pair2023/report.html
reproduce-pair: $(STAMP)
	$(BIN)/mechgrok reproduce pair2023

# Nanda's Alignment Forum post: every experiment on all CPUs, runs/phase-changes/report.html
reproduce-phase-changes: $(STAMP)
	$(BIN)/mechgrok reproduce phase-changes

bench: $(STAMP)
	$(BIN)/python experiments/benchmarks/train_speed.py

lint: $(STAMP)
	$(BIN)/ruff check mechgrok tests experiments

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

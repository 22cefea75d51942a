# Entry points for people and CI. Every target sets up its own environment.
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
BIN := $(VENV)/bin

# The shared data and the local mirror of third-party model files, when they are beside the repo.
export MASKGATE_SHARED ?= $(abspath $(SHARED))
ifneq ($(wildcard $(SHARED)/models),)
export MASKGATE_MIRROR ?= $(abspath $(SHARED)/models)
endif

.PHONY: setup demo test lint benchmark-train clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# A short training run on a sample of the faces: fetch, scan, split, train, evaluate, report.
demo: setup
	$(BIN)/maskgate models fetch
	rm -rf runs/demo
	$(BIN)/maskgate train --data $(SHARED)/data/faces --out runs/demo --max-per-class 150 \
		--input-size 96 --epochs 2 --fine-tune-epochs 1
	@echo "report: runs/demo/report.md"

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# The figures in docs/training.md: the default training run on the full faces dataset.
benchmark-train: setup
	$(BIN)/maskgate models fetch
	$(BIN)/maskgate train --data $(SHARED)/data/faces --out runs/faces-$$(date +%Y%m%d-%H%M%S)

# Keeps runs/: it holds training results.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Exported test artefacts are kept between runs (they take a minute to make).
export EMBEDSERVE_TEST_CACHE ?= $(CURDIR)/.cache/test-exports

.PHONY: demo test test-fast serve bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first, pinned exactly: that pin is the CPU build; anything looser pulls a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m server.demo

test: $(STAMP)
	$(BIN)/python -m pytest -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not slow"

serve: $(STAMP)
	$(BIN)/embedserve serve

bench: $(STAMP)
	$(BIN)/embedserve bench

clean:
	rm -rf $(VENV) .cache .pytest_cache

# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Exported test artefacts are kept between runs (they take a minute to make).
export EMBEDSERVE_TEST_CACHE ?= $(CURDIR)/.cache/test-exports

# Prometheus and promtool for the monitoring tests, from Debian; without apt those tests skip and say why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.PHONY: demo test test-fast serve bench dashboards prometheus clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first, pinned exactly: that pin is the CPU build; anything looser pulls a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m server.demo

test: $(STAMP) prometheus
	$(BIN)/python -m pytest -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not slow"

serve: $(STAMP)
	$(BIN)/embedserve serve

bench: $(STAMP)
	$(BIN)/embedserve bench

prometheus:
	@command -v promtool >/dev/null || $(SUDO) apt-get install -y --no-install-recommends prometheus \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus; } \
		|| echo "warning: could not install prometheus; the tests that need it will skip"

dashboards: $(STAMP)
	$(BIN)/python -m monitoring.dashboards

clean:
	rm -rf $(VENV) .cache .pytest_cache

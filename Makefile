# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Exported test artefacts are kept between runs (they take a minute to make).
export EMBEDSERVE_TEST_CACHE ?= $(CURDIR)/.cache/test-exports
# pytest-xdist workers of `make test`, a test file each at a time: the compose test on one, the rest on the other.
TEST_WORKERS ?= 2

# From Debian: Prometheus/promtool (monitoring tests), kubectl (deploy tests), Chromium (reports as rendered), and
# Docker Engine, docker-compose and debootstrap (the compose test, which starts dockerd itself when it is not running).
# A tool that cannot be installed stops `make test` with the reason (EMBEDSERVE_TESTS_SKIP_MISSING_TOOLS=1 pytest ...
# skips those tests instead).
TOOLS := promtool:prometheus kubectl:kubernetes-client dockerd:docker.io docker-compose:docker-compose \
	debootstrap:debootstrap chromium:chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.PHONY: demo test test-fast compose-test lint serve bench gpu-bundle dashboards tools constraints clean

# The same recipe as the Docker images (deploy/install.sh); here editable, with the dev extras.
$(STAMP): pyproject.toml deploy/install.sh deploy/constraints.txt
	PYTHON=$(PYTHON) EDITABLE=1 sh deploy/install.sh $(VENV) dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m loadtest.demo

test: $(STAMP) tools lint
	$(BIN)/python -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not slow"

# The composed stack for real: images built, `docker compose up`, Locust and Prometheus against it (`make test` runs
# it too); -s shows what it prints, the image's size among it.
compose-test: $(STAMP) tools
	$(BIN)/python -m pytest -ra -s tests/deploy/test_compose_stack.py

serve: $(STAMP)
	$(BIN)/embedserve serve

bench: $(STAMP)
	$(BIN)/embedserve bench --backends torch,onnx,openvino,onnx-int8,openvino-int8

# What a GPU host without network needs for the CUDA checks (tests/gpu_host/check.sh runs them there).
gpu-bundle: $(STAMP)
	$(BIN)/python -m tools.gpu_bundle pack .gpu

tools:
	@for tool in $(TOOLS); do \
		command -v $${tool%%:*} >/dev/null || $(SUDO) apt-get install -y --no-install-recommends $${tool#*:} \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $${tool#*:}; } \
		|| { echo "error: could not install $${tool#*:} with apt-get; the tests that need $${tool%%:*} cannot run" >&2; exit 1; }; \
	done

dashboards: $(STAMP)
	$(BIN)/python -m monitoring.dashboards

# After a change of pyproject.toml's dependencies: the versions pip now resolves, for every later install.
constraints: $(STAMP)
	{ sed -n '1,3p' deploy/constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -iv '^torch==\|^embedserve'; } > deploy/constraints.tmp
	mv deploy/constraints.tmp deploy/constraints.txt

clean:
	rm -rf $(VENV) .cache .pytest_cache

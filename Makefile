# pg_imgembed. `make install` sets up everything on Debian/Ubuntu (run as root); `make demo` and
# `make test` do the same first; `make lint` runs ruff and mypy; `make bench` prints the throughput table.
# `make docker-images` and `make test-docker` do the same for the Docker image.
# Variables: RUNTIME_DIR (where the server's Python packages go),
# PG_CONFIG (which PostgreSQL; default: the newest installed),
# ONNXRUNTIME (the runtime's onnxruntime build: onnxruntime, or onnxruntime-gpu[cuda,cudnn] for CUDA).

RUNTIME_DIR ?= /usr/local/lib/pg_imgembed
VENV ?= .venv
PYTEST_ARGS ?=
find_pg_config = $(firstword $(shell ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -rV))

.PHONY: install deps demo test lint test-docker docker-images bench dev-venv clean

install: deps
	$(MAKE) --no-print-directory -f extension.mk install RUNTIME_DIR=$(RUNTIME_DIR) \
		PG_CONFIG=$(or $(PG_CONFIG),$(call find_pg_config))

ONNXRUNTIME ?= onnxruntime

deps:
	RUNTIME_DIR=$(RUNTIME_DIR) ONNXRUNTIME='$(ONNXRUNTIME)' scripts/install-deps.sh

dev-venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements-runtime.txt pyproject.toml
	test -x $(VENV)/bin/python || /usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

demo: install dev-venv
	$(VENV)/bin/python scripts/demo.py --runtime-dir $(RUNTIME_DIR)

bench: install dev-venv
	$(VENV)/bin/python bench/throughput.py

lint: dev-venv
	$(VENV)/bin/ruff check pg_imgembed tests scripts bench
	$(VENV)/bin/mypy

test: install dev-venv
	PG_IMGEMBED_RUNTIME_DIR=$(RUNTIME_DIR) $(VENV)/bin/python -m pytest $(PYTEST_ARGS) tests

# Docker: the CPU image (CUDA=1: the CUDA image too), and the whole suite against the CPU image
# (PostgreSQL 17, Python 3.13 inside) through testcontainers.
docker-images:
	docker/engine.sh
	CUDA=$(CUDA) docker/build-images.sh

# Ryuk, testcontainers' reaper, is an image from a registry: off (the fixture stops its container).
test-docker: docker-images dev-venv
	PG_IMGEMBED_TEST_TARGET=docker TESTCONTAINERS_RYUK_DISABLED=true $(VENV)/bin/python -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf build .demo

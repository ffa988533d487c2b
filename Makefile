# pg_imgembed. `make install` sets up everything on Debian/Ubuntu (run as root); `make demo` and
# `make test` do the same first; `make lint` runs ruff, mypy and pgspot; `make bench` prints the throughput table.
# `make docker-images` and `make test-docker` do the same for the Docker image; `make test-fresh`
# runs the README's commands as a new user would, in fresh Debian 12 and 13 containers.
# Variables: RUNTIME_DIR (where the server's Python packages go),
# PG_CONFIG (which PostgreSQL; default: the newest installed),
# ONNXRUNTIME (the runtime's onnxruntime build: onnxruntime, or onnxruntime-gpu[cuda,cudnn] for CUDA).

RUNTIME_DIR ?= /usr/local/lib/pg_imgembed
VENV ?= .venv
TRITON_VENV ?= .triton-venv
DEMO_VENV = .demo/venv
PYTEST_ARGS ?=
find_pg_config = $(firstword $(shell ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -rV))

# `sudo make ...` from an ordinary user's checkout: the steps that only write into the checkout
# (venvs, the demo and its cluster) run as that user, and what the root steps leave there (build/,
# the compiled module, test caches) is handed back to them, so the checkout stays theirs.
SUDO_OWNER := $(shell [ "$$(id -u)" = 0 ] && [ -n "$$SUDO_UID" ] && [ "$$SUDO_UID" != 0 ] \
	&& [ "$$(stat -c %u .)" = "$$SUDO_UID" ] && echo "$$SUDO_USER")
AS_USER = $(if $(SUDO_OWNER),runuser -u $(SUDO_OWNER) --)
GIVE_BACK = $(if $(SUDO_OWNER),chown -R -h --from=0:0 $$SUDO_UID:$$SUDO_GID .,true)

.PHONY: install deps demo demo-check test lint surface test-docker test-fresh docker-images bench dev-venv triton-venv clean

install: deps
	status=0; $(MAKE) --no-print-directory -f extension.mk install RUNTIME_DIR=$(RUNTIME_DIR) \
		PG_CONFIG=$(or $(PG_CONFIG),$(call find_pg_config)) || status=$$?; $(GIVE_BACK); exit $$status

ONNXRUNTIME ?= onnxruntime

deps:
	RUNTIME_DIR=$(RUNTIME_DIR) ONNXRUNTIME='$(ONNXRUNTIME)' scripts/install-deps.sh

dev-venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements-runtime.txt pyproject.toml
	test -x $(VENV)/bin/python || $(AS_USER) /usr/bin/python3 -m venv $(VENV)
	$(AS_USER) $(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(AS_USER) $(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	$(AS_USER) touch $@

# pg-imgembed serve's Triton (requirements-serve.txt): a venv of its own, from the system's Python
# (the Python backend's stub links its libpython), with numpy<2 as nvidia-pytriton requires.
triton-venv: $(TRITON_VENV)/.installed

$(TRITON_VENV)/.installed: requirements-serve.txt
	test -x $(TRITON_VENV)/bin/python || $(AS_USER) /usr/bin/python3 -m venv $(TRITON_VENV)
	$(AS_USER) $(TRITON_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-serve.txt
	$(AS_USER) touch $@

# The demo needs only the installed extension and a PostgreSQL client to drive it: its venv sees
# the server's runtime (numpy) through a .pth file and adds psycopg and pgvector; the model's
# export brings its own venv (scripts/demo.py). Its cluster runs as the checkout's owner under
# sudo, else as postgres, which must then be able to reach the checkout: checked first.
demo: demo-check install $(DEMO_VENV)/.installed
	$(AS_USER) $(DEMO_VENV)/bin/python scripts/demo.py --runtime-dir $(RUNTIME_DIR)

demo-check:
	@scripts/demo-cluster.sh check

$(DEMO_VENV)/.installed: requirements-demo.txt
	$(AS_USER) mkdir -p .demo
	test -x $(DEMO_VENV)/bin/python || $(AS_USER) /usr/bin/python3 -m venv $(DEMO_VENV)
	$(AS_USER) $(DEMO_VENV)/bin/python -c 'import sys, sysconfig; open(sysconfig.get_path("purelib") + "/runtime.pth", "w").write( \
		"%s/lib/python%d.%d/site-packages\n" % (sys.argv[1], *sys.version_info[:2]))' $(RUNTIME_DIR)/venv
	$(AS_USER) $(DEMO_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-demo.txt
	$(AS_USER) touch $@

bench: install dev-venv
	$(VENV)/bin/python bench/throughput.py

# pgspot: search_path and unsafe-creation hazards in what a fresh install and each update run, as
# make install builds them. What it reports here and is ignored, each for a reason:
# - plpython3u: pgspot cannot read Python (its SQL goes through plpy under the function's search_path);
# - PS001, PS016, PS017 (unqualified operator, function, type): reported only where no secure
#   search_path is set, i.e. in tables, defaults, constraints and views, resolved once while
#   CREATE/ALTER EXTENSION runs the script with pg_catalog searched first, and in the bodies of
#   _owner_read/_owner_write, which run under the search_path worker_read/_write pin;
# - PS002, PS015 (CREATE OR REPLACE FUNCTION/VIEW in a schema the script does not create: the
#   extension's schema, and imgembed in an update): PostgreSQL (14.5 on) refuses to replace an
#   object the extension does not own, so one planted there fails the install instead of being used.
PGSPOT = $(VENV)/bin/pgspot --ignore-lang=plpython3u --ignore PS001 --ignore PS016 --ignore PS017 \
	--ignore PS002 --ignore PS015 \
	--proc-without-search-path 'imgembed._owner_read(tbl regclass,vector_column name,row_keys jsonb)' \
	--proc-without-search-path 'imgembed._owner_write(tbl regclass,vector_column name,vectors jsonb)'

lint: dev-venv
	$(VENV)/bin/ruff check pg_imgembed tests scripts bench
	$(VENV)/bin/mypy
	$(AS_USER) python3 scripts/build_sql.py --runtime-dir $(RUNTIME_DIR) --output build
	v=$$(python3 scripts/build_sql.py --version); $(PGSPOT) build/pg_imgembed--$$v.sql build/pg_imgembed--*--$$v.sql

# pytest runs as root (its server as postgres, as on a host where root installed it); no cache in
# the checkout, and what it leaves there goes back to the checkout's owner.
test: install dev-venv triton-venv
	status=0; PG_IMGEMBED_RUNTIME_DIR=$(RUNTIME_DIR) PG_IMGEMBED_TRITON_VENV=$(abspath $(TRITON_VENV)) $(VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests \
		|| status=$$?; $(GIVE_BACK); exit $$status

# After a change to the extension's objects: rewrite tests/expected/surface.txt from a fresh install.
surface: install dev-venv
	status=0; PG_IMGEMBED_RUNTIME_DIR=$(RUNTIME_DIR) $(VENV)/bin/python -m pytest -p no:cacheprovider -q tests/test_surface.py \
		--update-surface || status=$$?; $(GIVE_BACK); exit $$status

# Docker: the CPU image (CUDA=1: the CUDA image too), and the whole suite against the CPU image
# (PostgreSQL 17, Python 3.13 inside) through testcontainers.
docker-images:
	docker/engine.sh
	CUDA=$(CUDA) docker/build-images.sh

# Ryuk, testcontainers' reaper, is an image from a registry: off (the fixture stops its container).
test-docker: docker-images dev-venv
	PG_IMGEMBED_TEST_TARGET=docker TESTCONTAINERS_RYUK_DISABLED=true $(VENV)/bin/python -m pytest $(PYTEST_ARGS) tests

# The README's commands as a new user runs them, in fresh containers made with debootstrap:
# Debian 12 (bookworm) and 13 (trixie), about 20 minutes each on 2 cores. See docker/test-fresh.sh.
FRESH_SUITES ?= bookworm trixie
test-fresh:
	docker/engine.sh
	docker/test-fresh.sh $(FRESH_SUITES)

# A demo cluster still running is stopped first (as the user it runs as).
clean:
	@scripts/demo-cluster.sh stop
	rm -rf build .demo $(TRITON_VENV)

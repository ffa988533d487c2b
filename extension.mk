# PGXS makefile for the extension's files, plus the Python package copied into the runtime.
# Called by the top-level Makefile once PostgreSQL's server headers are installed.

EXTENSION = pg_imgembed
RUNTIME_DIR ?= /usr/local/lib/pg_imgembed
# This version's install script, the released ones, and an update from each (scripts/build_sql.py).
SQL_SCRIPTS := $(shell python3 scripts/build_sql.py --list)
DATA_built = $(addprefix build/,$(SQL_SCRIPTS))
# The C module: defines imgembed.* so PostgreSQL enforces who sets them (src/pg_imgembed.c), and
# keeps imgembed.model_stats in shared memory (src/model_stats.c).
MODULE_big = pg_imgembed
OBJS = src/pg_imgembed.o src/model_stats.o

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
# No JIT bitcode: nothing in the module is worth inlining, and it would need clang on the host.
override with_llvm = no
include $(PGXS)

# -C: leave files whose content is unchanged untouched, so a second install changes nothing.
INSTALL_DATA = /usr/bin/install -C -m 644

.PHONY: FORCE install-python
$(addprefix build/,$(SQL_SCRIPTS)) &: FORCE
	python3 scripts/build_sql.py --runtime-dir $(RUNTIME_DIR) --output build

# The package and its layers the server imports (client/ runs outside it).
RUNTIME_PACKAGES = pg_imgembed pg_imgembed/backend pg_imgembed/serving pg_imgembed/store pg_imgembed/image pg_imgembed/text pg_imgembed/onnx
SITE_PACKAGES = $(RUNTIME_DIR)/venv/lib/python$(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages

install: install-python
install-python:
	for d in $(RUNTIME_PACKAGES); do /usr/bin/install -d -m 755 $(SITE_PACKAGES)/$$d; \
		for f in $$d/*.py; do /usr/bin/install -C -m 644 $$f $(SITE_PACKAGES)/$$d/; done; done
	cd $(SITE_PACKAGES) && for f in $$(find pg_imgembed -name '*.py'); do test -f $(CURDIR)/$$f || rm -f $$f; done
	find $(SITE_PACKAGES)/pg_imgembed -depth -mindepth 1 -type d -empty -delete
	/usr/bin/python3 -m compileall -q $(SITE_PACKAGES)/pg_imgembed

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

SITE_PACKAGES = $(RUNTIME_DIR)/venv/lib/python$(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages

install: install-python
# The package and its layers, without client/ (the CLI and the worker run outside the server).
install-python:
	/usr/bin/install -d -m 755 $(SITE_PACKAGES)/pg_imgembed
	cd pg_imgembed && find . -path ./client -prune -o -name '*.py' -print | while read -r f; do /usr/bin/install -D -C -m 644 "$$f" "$(SITE_PACKAGES)/pg_imgembed/$$f"; done
	# what another version installed and this one lacks, modules and sub-packages alike (a stale package shadows a module)
	cd $(SITE_PACKAGES)/pg_imgembed && find . -name '*.py' | while read -r f; do test -f "$(CURDIR)/pg_imgembed/$$f" || rm -f "$$f"; done
	cd $(SITE_PACKAGES)/pg_imgembed && find . -mindepth 1 -depth -type d -not -name __pycache__ | while read -r d; do test -d "$(CURDIR)/pg_imgembed/$$d" || rm -rf "$$d"; done
	rm -rf $(SITE_PACKAGES)/pg_imgembed/client
	/usr/bin/python3 -m compileall -q $(SITE_PACKAGES)/pg_imgembed

# The one entry point: every target installs what it needs, from nothing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_STAMP := .dev/.debs
DEBS := bubblewrap python3-seccomp nodejs chromium

.PHONY: dev test lint bench chaos package clean install debs cost

install: $(STAMP) $(DEB_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml clients/python/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip<26.3"  # chalice 1.34 pins pip<26.3 for `chalice package`
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e clients/python  # the Python client and the `coderunner` command
	$(BIN)/pip install -q --no-deps -e .  # devtools (the operator's `coderunner keys`), chalicelib
	touch $(STAMP)

# Debian packages the local sandbox needs (bubblewrap, seccomp for the filter, Node.js for the runtime).
$(DEB_STAMP): Makefile
	@mkdir -p .dev
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    echo "installing Debian packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi
	touch $(DEB_STAMP)

dev: install
	PYTHONPATH=. $(BIN)/python -m devtools.stack

test: install
	PYTHONPATH=. $(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadgroup

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	@mkdir -p .dev
	PYTHONPATH=. $(BIN)/python -m tests.bench | tee .dev/bench.json

chaos: install
	PYTHONPATH=. $(BIN)/python -m tests.e2e.chaos --jobs $${JOBS:-200}

package: install
	PYTHONPATH=. bash infra/package.sh

clean:
	rm -rf $(VENV) .dev build .pytest_cache .mypy_cache .ruff_cache

cost: install
	PYTHONPATH=. $(BIN)/python -m devtools.cost

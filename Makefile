# The one entry point: every target installs what it needs, from nothing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_STAMP := .dev/.debs
DEBS := bubblewrap python3 nodejs chromium
STAGE ?= dev
# image/deploy need only the standard library: the venv's Python when there is one.
DEPLOY_PY := $(firstword $(wildcard $(BIN)/python) python3)

.PHONY: dev test test-extended lint bench chaos cost fuzz fuzz-api fuzz-edge package image deploy verify-cloud clean install debs

# Python packages only; the targets that run the local sandbox also need `debs`.
install: $(STAMP)

debs: $(DEB_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml clients/python/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	@echo "make: creating $(VENV) and installing the Python packages (a few minutes the first time)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip<26.3"  # chalice 1.34 pins pip<26.3 for `chalice package`
	@echo "make: installing requirements-dev.txt (chalice, moto, pytest, schemathesis, ...)"
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e clients/python  # the Python client and the `coderunner` command
	$(BIN)/pip install -q --no-deps -e .  # devtools (the operator's `coderunner keys`), chalicelib
	touch $(STAMP)
	@echo "make: Python packages installed"

# Debian packages: bubblewrap, Debian's python3 and Node.js for the sandbox's runtimes, chromium for the
# playground's browser test. Re-checked whenever this Makefile changes (only missing ones are installed).
$(DEB_STAMP): Makefile
	@mkdir -p .dev
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    echo "make: installing Debian packages:$$missing (apt-get; a minute or two)"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi
	touch $(DEB_STAMP)

dev: install debs
	PYTHONPATH=. $(BIN)/python -m devtools.stack

# Work goes to the two workers longest first (tests/conftest.py orders it; xdist must not re-sort it by size).
test: install debs
	PYTHONPATH=. $(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadgroup --no-loadscope-reorder -m "not extended"

# What does not fit make test's time: e.g. make verify-cloud against a stack whose Lambda refuses every prctl.
test-extended: install debs
	PYTHONPATH=. $(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadgroup -m extended

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install debs
	@mkdir -p .dev
	PYTHONPATH=. $(BIN)/python -m tests.bench | tee .dev/bench.json

chaos: install debs
	PYTHONPATH=. $(BIN)/python -m tests.e2e.chaos --jobs $${JOBS:-200}

# Generated requests against a local stack; each fuzzer is its own target (`make fuzz` runs them all).
fuzz: fuzz-api fuzz-edge

# schemathesis from the OpenAPI document: >= 1,000 requests, no 5xx, no undocumented 503, no schema break.
fuzz-api: install debs
	@mkdir -p .dev
	PYTHONPATH=. $(BIN)/python -m tests.e2e.fuzz --examples $${EXAMPLES:-40} --min-requests 1000 --workdir .dev/fuzz

# The edge's property test (tests/integration/test_fuzz_api.py) with many fresh Hypothesis examples, in process
# on moto (make test runs a fixed 250). FUZZ_EXAMPLES=20000 for more; a failure prints a blob to reproduce it.
fuzz-edge: install
	CODERUNNER_FUZZ=fuzz PYTHONPATH=. $(BIN)/pytest -q -p no:cacheprovider --timeout=0 \
	  --hypothesis-show-statistics tests/integration/test_fuzz_api.py

# The three deploy commands (infra/DEPLOY.md): make package STAGE=prod; make image; make deploy STAGE=prod.
# DRY_RUN=1 makes image and deploy print their AWS CLI and docker commands instead of running them.
package: install
	STAGE=$(STAGE) PYTHONPATH=. bash infra/package.sh

image:
	PYTHONPATH=. $(DEPLOY_PY) -m infra.deploy image

deploy:
	PYTHONPATH=. $(DEPLOY_PY) -m infra.deploy deploy --stage $(STAGE)

# After a deploy: the attack suite and normal jobs through the deployed API, in every sandbox it offers
# (devtools/verify_cloud.py). The key travels in the environment, not on a command line.
verify-cloud: install
	@test -n "$(URL)" && test -n "$(KEY)" || { echo "usage: make verify-cloud URL=<the API URL> KEY=<a pro or enterprise key>"; exit 2; }
	CODERUNNER_API_KEY="$(KEY)" PYTHONPATH=. $(BIN)/python -m devtools.verify_cloud --url "$(URL)"

clean:
	rm -rf $(VENV) .dev build .pytest_cache .mypy_cache .ruff_cache

cost: install debs
	PYTHONPATH=. $(BIN)/python -m devtools.cost

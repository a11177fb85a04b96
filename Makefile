# Two commands on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# An unpinned torch pulls gigabytes of CUDA wheels; override for your machine, e.g.
#   make quickstart TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH ?= torch==2.13.0
STORAGE ?= sqlite:///depthsearch.db
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: help install install-dev services quickstart test lint bench clean

help:
	@echo "make quickstart  - set up .venv, run studies/quickstart.toml into $(STORAGE), export best.json"
	@echo "make test        - set up .venv with the dev extra, run ruff, mypy and the test suite"

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .

install-dev: $(PY)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'

quickstart: install
	$(BIN)/depthsearch run studies/quickstart.toml --storage $(STORAGE)
	$(BIN)/depthsearch export --study quickstart --storage $(STORAGE) -o best.json

lint: install-dev
	$(BIN)/ruff check depthsearch tests benchmarks
	$(BIN)/ruff format --check depthsearch tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Real parts the tests start themselves, from Debian's packages: chromium (the dashboard in a
# browser), pgbouncer (workers through a connection pooler), slurm-wlm and munge (a two-node
# Slurm on this machine). Installed when we can (root); kubectl renders the Kubernetes base.
SERVICE_PACKAGES := chromium pgbouncer slurm-wlm munge
services:
	@{ command -v chromium && [ -x /usr/sbin/pgbouncer ] && command -v slurmctld && command -v munged; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SERVICE_PACKAGES) >/dev/null) \
	  || echo "$(SERVICE_PACKAGES): some missing and not root: their tests will skip (CI fails instead)"; }

test: lint services
	$(BIN)/pytest

clean:
	rm -rf $(VENV) depthsearch.db depthsearch.db.lock depthsearch.db.checkpoints best.json .pytest_cache .mypy_cache .ruff_cache

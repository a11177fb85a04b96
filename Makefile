# Two commands on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# An unpinned torch pulls gigabytes of CUDA wheels; override for your machine, e.g.
#   make quickstart TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH ?= torch==2.13.0
STORAGE ?= sqlite:///depthsearch.db
# The lock (pip constraints, Python 3.11): what `make test` and `make quickstart` install, so a
# fresh machine type-checks and tests against the same releases as CI. Refreshed on purpose with
# `make upgrade-deps`. `make ... LOCK=` installs the newest releases the package's ranges allow.
LOCK ?= constraints.txt
PIP_LOCK := $(if $(LOCK),-c $(LOCK))
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: help install install-dev services quickstart test lint docs docs-check dist upgrade-deps clean

help:
	@echo "make quickstart  - set up .venv, run studies/quickstart.toml into $(STORAGE), export best.json"
	@echo "make test        - set up .venv with the dev extra, run ruff, mypy and the test suite"
	@echo "make docs        - build the docs site (strict) and serve it on http://127.0.0.1:8000"
	@echo "make dist        - build wheel and sdist, twine check, install in a fresh venv, run the quickstart"
	@echo "make upgrade-deps - try the newest releases in .venv-upgrade, say what broke, write $(LOCK).new"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch with pip (TORCH may name a wheel on this disk or carry pip's --index-url); the rest
# with uv, pinned here: the dev extra's ~160 packages in 7 s instead of pip's 45 s on a fresh
# clone (2 cores, 2026-12-07), from the same lock. uv installs no byte code: `make test`
# compiles the few thousand files the suite imports, once ($(VENV)/.bytecode below).
UV ?= uv==0.13.8
$(BIN)/uv: | $(PY)
	$(PY) -m pip install -q --no-compile '$(UV)'

install: $(BIN)/uv
	$(PY) -m pip install -q --no-compile $(TORCH)
	$(BIN)/uv pip install -q --compile-bytecode --python $(PY) $(PIP_LOCK) -e .

install-dev: $(BIN)/uv
	$(PY) -m pip install -q --no-compile $(TORCH)
	$(BIN)/uv pip install -q --python $(PY) $(PIP_LOCK) -e '.[dev]'

quickstart: install
	$(BIN)/depthsearch run studies/quickstart.toml --storage $(STORAGE)
	$(BIN)/depthsearch export --study quickstart --storage $(STORAGE) -o best.json

lint: install-dev
	$(BIN)/ruff check depthsearch tests benchmarks tools
	$(BIN)/ruff format --check depthsearch tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Real parts the tests start themselves, from Debian's packages: chromium (the dashboard in a
# browser), pgbouncer (workers through a connection pooler), slurm-wlm and munge (a two-node
# Slurm on this machine), docker-compose (validates docker-compose.yml; no engine runs).
# Installed when we can (root); kubectl renders the Kubernetes base.
SERVICE_PACKAGES := chromium pgbouncer slurm-wlm munge docker-compose
services:
	@{ command -v chromium && [ -x /usr/sbin/pgbouncer ] && command -v slurmctld && command -v munged && command -v docker-compose; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SERVICE_PACKAGES) >/dev/null) \
	  || echo "$(SERVICE_PACKAGES): some missing and not root: their tests will skip (CI fails instead)"; }

# Three pytest-xdist workers keep 2 cores busy from start to end (two: 575 s, three: 547 s, four
# no better; 2026-12-06); the Slurm tests share one, the MLflow tests one. The lint (mypy: one
# core, 25 s cold) and the byte code (one core, 22 s) run side by side before it.
TEST_WORKERS ?= 3
test: services
	$(MAKE) --no-print-directory -j2 --output-sync=target lint $(VENV)/.bytecode
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15

# What the suite's processes import, byte-compiled once in one process (tools/warm_bytecode.py):
# left to the suite, its first processes all compile the same modules at once. Again when the
# installed releases may have changed.
$(VENV)/.bytecode: pyproject.toml $(LOCK) | install-dev
	env -u PYTHONDONTWRITEBYTECODE $(PY) tools/warm_bytecode.py
	touch $@

# The docs site: references generated from the code (tools/docs_hooks.py), strict about links.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

docs-check: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $$(mktemp -d)

# The release: wheel and sdist, twine check, and the wheel alone in a fresh venv (CI runs it).
dist: install-dev
	tools/check-dist.sh $(PYTHON) "$(TORCH)" "$(LOCK)"

# The newest releases the package's ranges allow, in a venv of their own: lint and the tests run
# there and each step says whether it broke; the new lock is written beside the old one with the
# versions that moved. Adopt it with `mv $(LOCK).new $(LOCK)` in a commit that says so.
UPGRADE_TESTS ?= tests
upgrade-deps:
	PYTHON=$(PYTHON) TORCH="$(TORCH)" LOCK=$(or $(LOCK),constraints.txt) tools/upgrade-deps.sh $(UPGRADE_TESTS)

clean:
	rm -rf $(VENV) .venv-upgrade site dist depthsearch.db depthsearch.db.lock depthsearch.db.checkpoints best.json .pytest_cache .mypy_cache .ruff_cache

#!/usr/bin/env bash
# The release as a user gets it: a wheel and an sdist built from this tree, checked by twine,
# the wheel installed into a fresh virtual environment (with the lock, and TORCH first), and
# `depthsearch --help`, `--version` and a quickstart run from it, in a folder outside the
# repository, so nothing is imported from this checkout.
#   tools/check-dist.sh PYTHON "TORCH SPEC" LOCK
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3}
TORCH=${2:-torch==2.13.0}
LOCK=${3:-constraints.txt}
rm -rf dist
.venv/bin/python -m build --outdir dist . >/dev/null
.venv/bin/twine check --strict dist/*
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install -q $TORCH
"$work/venv/bin/pip" install -q ${LOCK:+-c "$PWD/$LOCK"} dist/depthsearch-*.whl
cp -r studies "$work/studies"
cd "$work"
venv/bin/depthsearch --help >/dev/null
version=$(venv/bin/depthsearch --version)
[ "$version" = "depthsearch, version $(venv/bin/python -c 'import depthsearch; print(depthsearch.__version__)')" ]
venv/bin/python -c 'import depthsearch, sys; assert "/venv/" in depthsearch.__file__, depthsearch.__file__'
venv/bin/depthsearch run studies/quickstart.toml --n-trials 2
venv/bin/depthsearch export --study quickstart -o best.json
echo "dist ok: $(ls "$OLDPWD"/dist | tr '\n' ' ')($version, installed and run from the wheel)"

#!/usr/bin/env bash
# Writes the lock (pip constraints) of a virtual environment to stdout: every installed
# distribution at its exact version, less the package itself and less torch and what only torch
# pulls in (torch is chosen per machine: `make ... TORCH=...`, a CPU or a CUDA build).
#   tools/lock.sh .venv > constraints.txt
set -euo pipefail
venv="${1:?usage: tools/lock.sh VENV}"
py_version="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
echo "# depthsearch's lock: the versions \`make test\`, \`make quickstart\` and the image install"
echo "# (pip -c). Refreshed on purpose with \`make upgrade-deps\`, never by hand; Python $py_version."
echo "# torch is not here: the Makefile's TORCH (or the image's TORCH_SPEC) chooses it."
"$venv/bin/pip" freeze --exclude-editable --disable-pip-version-check \
  | grep -viE '^(torch|triton|nvidia-[a-z0-9-]+|sympy|mpmath|networkx|depthsearch)(==| @)' \
  | LC_ALL=C sort -f

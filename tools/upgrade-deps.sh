#!/usr/bin/env bash
# `make upgrade-deps`: install the newest releases that pyproject.toml's ranges allow into
# .venv-upgrade (the lock ignored), run the checks and the tests there, say what broke and which
# versions moved, and write the candidate lock to $LOCK.new. Exit 0 only when nothing broke.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}" TORCH="${TORCH:-torch==2.13.0}" LOCK="${LOCK:-constraints.txt}"
venv=.venv-upgrade
rm -rf "$venv"
"$PYTHON" -m venv "$venv" || exit 1
# shellcheck disable=SC2086  # TORCH may carry pip options (--index-url ...)
"$venv/bin/pip" install -q $TORCH || exit 1
"$venv/bin/pip" install -q --upgrade -e '.[dev]' || { echo "upgrade-deps: the install broke"; exit 1; }
tools/lock.sh "$venv" > "$LOCK.new"

echo "== versions that moved ($LOCK -> $LOCK.new)"
diff <(grep -v '^#' "$LOCK") <(grep -v '^#' "$LOCK.new") | grep '^[<>]' || echo "(none)"

broke=()
step() {  # step NAME COMMAND...: run one check, remember it when it fails
  local name="$1"; shift
  echo "== $name"
  if "$@"; then echo "-- $name: ok"; else echo "-- $name: BROKE"; broke+=("$name"); fi
}
step "ruff check" "$venv/bin/ruff" check depthsearch tests benchmarks
step "ruff format" "$venv/bin/ruff" format --check depthsearch tests benchmarks
step "mypy" "$venv/bin/mypy"
step "import contracts" "$venv/bin/lint-imports" --no-cache
step "tests" "$venv/bin/pytest" -q -p no:cacheprovider "$@"

if ((${#broke[@]})); then
  echo "upgrade-deps: broke with the newest releases: ${broke[*]} (the lock is unchanged; $LOCK.new holds the candidate)"
  exit 1
fi
echo "upgrade-deps: nothing broke; adopt the new lock with: mv $LOCK.new $LOCK"

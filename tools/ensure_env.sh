#!/usr/bin/env bash
# Make sure a Python environment with skyseg and its dependencies exists.
# Called by run_tests.sh and run_pipeline.sh; prints the python to use on stdout.
#
# - SKYSEG_PYTHON=/path/to/python: use that interpreter as it is (e.g. an
#   activated conda env made from environment.yml); nothing is installed.
# - otherwise ./.venv is created (or updated when setup.cfg changed) with
#   `pip install -e .[dev]`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -n "${SKYSEG_PYTHON:-}" ]; then
  echo "$SKYSEG_PYTHON"
  exit 0
fi

venv="${SKYSEG_VENV:-$root/.venv}"
stamp="$venv/.skyseg-installed"
want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi

pick_python() {
  for candidate in python3.11 python3.12 python3.10 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

if [ ! -x "$venv/bin/python" ]; then
  base="$(pick_python)" || {
    echo "skyseg: no Python 3.10-3.12 found; install Python 3.11 (or use environment.yml with conda)" >&2
    exit 2
  }
  echo "skyseg: creating the environment in $venv (one time, about two minutes)" >&2
  "$base" -m venv "$venv" >&2
fi
echo "skyseg: installing skyseg and its dependencies into $venv" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2 2>/dev/null || true
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev]" 2> >(grep -v "is ignored: it is neither" >&2) >&2; then
  echo "skyseg: pip install failed; see the messages above" >&2
  exit 2
fi
echo "$want" > "$stamp"
echo "$venv/bin/python"

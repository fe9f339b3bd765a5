#!/usr/bin/env bash
# The skyseg pipeline (work in progress): creates the environment if missing.
set -euo pipefail
cd "$(dirname "$0")"
python="$(bash scripts/ensure_env.sh)"
"$python" -m skyseg --help

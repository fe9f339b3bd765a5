#!/usr/bin/env bash
# Run the skyseg test suite, creating the environment first if it is missing.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k exr -x
set -euo pipefail
cd "$(dirname "$0")"
python="$(bash tools/ensure_env.sh)"
exec "$python" -m pytest "$@"

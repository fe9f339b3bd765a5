#!/usr/bin/env bash
# The whole skyseg pipeline: previews -> dataset -> training -> prediction -> evaluation.
#
#   ./run_pipeline.sh                         # the bundled demo (real labelled HDR panoramas)
#   TRAIN=false ./run_pipeline.sh             # stage flags from the environment ...
#   ./run_pipeline.sh --train=false           # ... or as options
#   ./run_pipeline.sh --config my-skies.yaml  # your images and labels
#
# Stage flags: PREVIEWS, BUILD_DATASET, TRAIN, PREDICT, EVALUATE (true/false).
# Creates the Python environment on first use, then only calls the skyseg CLI;
# `./run_pipeline.sh --help` lists every option.
set -euo pipefail
cd "$(dirname "$0")"
python="$(bash tools/ensure_env.sh)"
exec "$python" -m skyseg pipeline "$@"

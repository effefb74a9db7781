#!/usr/bin/env bash
# Regenerates pandas' reference values of the streaming indicators:
#   scripts/indicator_reference.sh [OUT.csv]   (default: data/reference/indicators_eurusd.csv)
# Uses the pinned virtual environment of scripts/reference_venv.sh (made under target/
# the first time, from PyPI), then runs scripts/indicator_reference.py.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-data/reference/indicators_eurusd.csv}"
source scripts/reference_venv.sh
"$venv/bin/python" scripts/indicator_reference.py data/EURUSD.csv "$out"

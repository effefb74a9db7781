#!/usr/bin/env bash
# Regenerates pandas' reference values of the streaming indicators:
#   scripts/indicator_reference.sh [OUT.csv]   (default: data/reference/indicators_eurusd.csv)
# Uses the pinned virtual environment of scripts/backtesting_reference.sh (made under target/
# the first time, from PyPI), then runs scripts/indicator_reference.py.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-data/reference/indicators_eurusd.csv}"
venv="${TICKLOOP_REFERENCE_VENV:-target/backtesting-venv}"
req=scripts/backtesting_reference.requirements.txt

if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi
"$venv/bin/python" scripts/indicator_reference.py data/EURUSD.csv "$out"

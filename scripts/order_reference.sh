#!/usr/bin/env bash
# Regenerates the backtesting.py references of tickloop's order types and backtest options:
#   scripts/order_reference.sh [OUT.json]   (default: data/reference/orders_eurusd.json)
# Uses the pinned virtual environment under target/ (scripts/reference_venv.sh), then runs
# scripts/order_reference.py. Needs python3 with venv and, the first time, PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-data/reference/orders_eurusd.json}"
source scripts/reference_venv.sh
"$venv/bin/python" scripts/order_reference.py data/EURUSD.csv "$out"

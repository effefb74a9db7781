#!/usr/bin/env bash
# Regenerates the backtesting.py reference of SmaCross(10, 20) on data/EURUSD.csv:
#   scripts/backtesting_reference.sh [OUT.json]   (default: data/reference/sma_cross_eurusd.json)
# Makes a virtual environment under target/ (kept between runs) with the pinned backtesting.py,
# pandas and numpy from PyPI, then runs scripts/backtesting_reference.py. Needs python3 with
# venv (scripts/setup.sh installs python3-venv) and, the first time, PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-data/reference/sma_cross_eurusd.json}"
source scripts/reference_venv.sh
"$venv/bin/python" scripts/backtesting_reference.py data/EURUSD.csv "$out"

#!/usr/bin/env bash
# Sourced by the reference scripts: makes (or reuses) the virtual environment under target/
# with the pinned backtesting.py, pandas and numpy from PyPI, and sets $venv to it. Needs
# python3 with venv (scripts/setup.sh installs python3-venv) and, the first time, PyPI.
venv="${TICKLOOP_REFERENCE_VENV:-target/backtesting-venv}"
# One script at a time makes it (the tests run two of them at once): held until exit.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
req=scripts/backtesting_reference.requirements.txt

if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi

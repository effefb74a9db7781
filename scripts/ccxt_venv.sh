#!/usr/bin/env bash
# Makes (or reuses) the virtual environment of the ccxt adapter under target/: the package in
# adapters/ccxt with its mock exchange (ccxt 4.x, aiohttp from PyPI), and prints its python.
# Needs python3 with venv (scripts/setup.sh installs python3-venv) and, the first time, PyPI.
# Run from anywhere; one run at a time makes it (the tests start several at once).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TICKLOOP_CCXT_VENV:-target/ccxt-venv}"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
stamp="$(cat adapters/ccxt/pyproject.toml adapters/ccxt/tickloop_ccxt/*.py | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  # Made beside the old one and swapped in, so a run using the old one is not cut off.
  rm -rf "$venv.new" "$venv.old"
  python3 -m venv "$venv.new"
  "$venv.new/bin/python" -m pip install --quiet --disable-pip-version-check "./adapters/ccxt[mock]" >&2
  echo "$stamp" > "$venv.new/.stamp"
  [ -d "$venv" ] && mv "$venv" "$venv.old"
  mv "$venv.new" "$venv"
  rm -rf "$venv.old"
fi
echo "$(cd "$venv" && pwd)/bin/python"

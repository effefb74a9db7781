#!/usr/bin/env bash
# Installs what tickloop's build and tests need and the machine lacks. Safe to run again.
# Needs a Rust toolchain (rustup) already; everything else comes from Debian's packages or
# crates.io. Run as root, or with sudo available, on Debian or Ubuntu.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root (or sudo) to run: $*"; return 1; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    say "apt-get not found: install ${missing[*]} with your package manager"; return 1
  fi
  say "installing ${missing[*]}"
  if [ ! -f /tmp/.tickloop-apt-updated ]; then
    as_root apt-get update -qq && touch /tmp/.tickloop-apt-updated
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

if ! command -v cargo >/dev/null; then
  say "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
  exit 1
fi

# python3 runs the interop tests and the Python peer of the ring benchmark.
command -v python3 >/dev/null || apt_install python3
# venv and ensurepip: scripts/backtesting_reference.sh makes the backtesting.py venv under target/.
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
# mount/umount (util-linux) for the full-/dev/shm tests.
command -v mount >/dev/null || apt_install mount
# cyclictest (rt-tests) is the timer-lateness reference of `tickloop bench timers`.
command -v cyclictest >/dev/null || apt_install rt-tests
# The benchmarks' PNG plots need no font package or fontconfig: their font is compiled in
# (bench/fonts/DejaVuSans.ttf, drawn by plotters' ab_glyph feature).

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    say "adding rustup component $component"
    rustup component add "$component"
  fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest from crates.io"
  cargo install cargo-nextest --locked --quiet
fi

# The ccxt adapter (adapters/ccxt) and its mock exchange, in target/ccxt-venv (from PyPI the
# first time): what `tickloop run` starts for a real account, and what tests/ccxt.rs trades.
say "ccxt adapter: $("$(dirname "$0")/ccxt_venv.sh")"

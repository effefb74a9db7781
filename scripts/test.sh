#!/usr/bin/env bash
# The test suite: every crate's tests (real processes, pipes, /dev/shm, signals) and the loom
# model check of the ring's lock-free protocols. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== tests (release build: the multi-process tests move millions of candles)"
# The benchmark program is its own binary, which no test target builds by itself.
cargo build --release --locked --quiet -p tickloop-bench
cargo nextest run --workspace --release --no-fail-fast

echo "== loom model check of the ring protocols (ring/src/protocol.rs)"
RUSTFLAGS="--cfg loom" cargo test -p tickloop-ring --release --lib --target-dir target/loom -- loom

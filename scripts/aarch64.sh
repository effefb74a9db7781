#!/usr/bin/env bash
# Cross-builds the workspace for aarch64 (Raspberry Pi 4/5, 64-bit OS) and runs the ring's
# tests under qemu-aarch64. If the toolchain cannot be installed here, it says so loudly and
# exits 0 (CI's other steps still count); if it installs, any failure fails.
set -uo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

loud() {
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  printf '!!! aarch64 step SKIPPED: %s\n' "$*" >&2
  printf '!!! The aarch64 cross-build and qemu tests did NOT run on this machine.\n' >&2
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
  exit 0
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || loud "no apt-get to install ${need[*]}"
  echo "aarch64: installing ${need[*]}" >&2
  { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } \
    || loud "apt-get could not install ${need[*]}"
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target" >/dev/null 2>&1 || loud "rustup could not add the $target target"
fi

set -e
echo "== aarch64: cross-build of the whole workspace"
cargo build --workspace --release --target "$target"
echo "== aarch64: the tests of the ring, the runtime, the operating services (ring, loop, host, lock, metrics page) and the host doctor (its fixtures) under qemu-aarch64"
# qemu-user cannot map hugetlbfs files (it emulates mmap with the guest's 4 KiB pages), so the
# hugetlbfs test runs natively only.
# TICKLOOP_UNDER_QEMU tells the tests that need the real /proc of other processes (qemu-user
# emulates a process's own /proc/self/stat, so its start time differs from what others read).
# One test at a time: `cargo test` runs a file's tests as threads of one process, and a child
# that one test forks holds copies of every fd another test has open until it execs or exits,
# flocks included (nextest, used natively, runs each test in its own process). Under qemu a
# fork lasts long enough for a ring writer's lock to look held by a writer that closed it.
TICKLOOP_UNDER_QEMU=1 cargo test -p tickloop-ring -p tickloop-runtime -p tickloop-ops -p tickloop-linux-tuning --release --target "$target" -- --skip hugetlbfs --test-threads=1

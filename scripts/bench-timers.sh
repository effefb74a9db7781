#!/usr/bin/env bash
# Runs the timers benchmark, saves bench/results/timers.{json,md}, and puts the table into README.md
# (between the timers-bench markers), so the README always shows the committed run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
target/release/tickloop bench timers --save bench/results "$@"
python3 - <<'PY'
import re
readme = open("README.md").read()
table = open("bench/results/timers.md").read().strip()
new, n = re.subn(r"(<!-- timers-bench:start -->).*?(<!-- timers-bench:end -->)",
                 lambda m: m.group(1) + "\n" + table + "\n" + m.group(2), readme, flags=re.S)
if n != 1:
    raise SystemExit("README.md has no timers-bench markers")
open("README.md", "w").write(new)
print("README.md updated from bench/results/timers.md")
PY

#!/usr/bin/env bash
# Runs the ring benchmark, saves bench/results/ring.{json,md}, and puts the table into README.md
# (between the ring-bench markers), so the README always shows the committed run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
target/release/tickloop bench ring --save bench/results "$@"
python3 - <<'PY'
import re
readme = open("README.md").read()
table = open("bench/results/ring.md").read().strip()
new, n = re.subn(r"(<!-- ring-bench:start -->).*?(<!-- ring-bench:end -->)",
                 lambda m: m.group(1) + "\n" + table + "\n" + m.group(2), readme, flags=re.S)
if n != 1:
    raise SystemExit("README.md has no ring-bench markers")
open("README.md", "w").write(new)
print("README.md updated from bench/results/ring.md")
PY

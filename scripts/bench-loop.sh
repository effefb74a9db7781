#!/usr/bin/env bash
# Runs the loop benchmark, saves bench/results/loop.{json,md}, and puts the table into README.md
# (between the loop-bench markers), so the README always shows the committed run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
target/release/tickloop bench loop --save bench/results "$@"
python3 - <<'PY'
import re
readme = open("README.md").read()
table = open("bench/results/loop.md").read().strip()
new, n = re.subn(r"(<!-- loop-bench:start -->).*?(<!-- loop-bench:end -->)",
                 lambda m: m.group(1) + "\n" + table + "\n" + m.group(2), readme, flags=re.S)
if n != 1:
    raise SystemExit("README.md has no loop-bench markers")
open("README.md", "w").write(new)
print("README.md updated from bench/results/loop.md")
PY

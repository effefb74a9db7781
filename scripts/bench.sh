#!/usr/bin/env bash
# Usage: scripts/bench.sh NAME [ARGS...]   (NAME: ring, timers, loop or adapter)
# Runs `tickloop bench NAME --save bench/results ARGS...`, which saves bench/results/NAME.{json,md},
# and puts the table into README.md (between the NAME-bench markers), so the README always shows
# the committed run.
set -euo pipefail
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: scripts/bench.sh NAME [ARGS...]  (NAME: ring, timers, loop or adapter)" >&2
    exit 2
fi
name=$1
shift
cd "$(dirname "$0")/.."
cargo build --release --quiet
target/release/tickloop bench "$name" --save bench/results "$@"
python3 - "$name" <<'PY'
import re, sys
name = sys.argv[1]
readme = open("README.md").read()
table = open(f"bench/results/{name}.md").read().strip()
new, n = re.subn(rf"(<!-- {re.escape(name)}-bench:start -->).*?(<!-- {re.escape(name)}-bench:end -->)",
                 lambda m: m.group(1) + "\n" + table + "\n" + m.group(2), readme, flags=re.S)
if n != 1:
    raise SystemExit(f"README.md has no {name}-bench markers")
open("README.md", "w").write(new)
print(f"README.md updated from bench/results/{name}.md")
PY

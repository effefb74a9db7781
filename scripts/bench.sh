#!/usr/bin/env bash
# Usage: scripts/bench.sh NAME [ARGS...]   (NAME: ring, timers, loop, adapter, poll or all)
#
# NAME: runs `tickloop bench NAME --out bench/results ARGS...`, which writes
#   bench/results/NAME.{md,json}, NAME-ROW.hgrm per measured row and NAME.{svg,png}.
# all:  runs `tickloop bench all --out bench/results/YYYY-MM-DD ARGS...`: every scenario's
#   files, summary.{md,json} and machine.{md,json} in a dated folder, kept so users can
#   compare their host with ours.
# Then puts each table into README.md (between the NAME-bench markers, where there are any)
# and each plot (between the NAME-plot markers), so the README always shows a committed run.
set -euo pipefail
usage="usage: scripts/bench.sh NAME [ARGS...]  (NAME: ring, timers, loop, adapter, poll or all)"
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "$usage" >&2
    exit 2
fi
name=$1
shift
case $name in
    ring|timers|loop|adapter|poll) dir=bench/results; names=$name ;;
    all) dir=bench/results/$(date -u +%F); names="ring timers loop adapter poll" ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
cargo build --release --quiet
status=0
target/release/tickloop bench "$name" --out "$dir" "$@" || status=$?
python3 - "$dir" $names <<'PY'
import os, re, sys
dir, names = sys.argv[1], sys.argv[2:]
readme = open("README.md").read()
def put(readme, marker, body):
    pattern = rf"(<!-- {re.escape(marker)}:start -->).*?(<!-- {re.escape(marker)}:end -->)"
    return re.subn(pattern, lambda m: m.group(1) + "\n" + body + m.group(2), readme, flags=re.S)
for name in names:
    md = os.path.join(dir, f"{name}.md")
    if not os.path.exists(md):
        print(f"README.md: no {md} (the {name} benchmark failed?), its table is left as it was")
        continue
    table = open(md).read().strip()
    source = f"From `{md}` (`{name}.json`, the `.hgrm` files and the plot beside it):\n\n"
    readme, n = put(readme, f"{name}-bench", source + table + "\n")
    print(f"README.md: {name} table from {md}" if n else f"README.md: no {name}-bench markers")
    png = os.path.join(dir, f"{name}.png")
    image = f"![{name} benchmark: latency percentiles]({png})\n" if os.path.exists(png) else ""
    readme, n = put(readme, f"{name}-plot", image)
    if n and image:
        print(f"README.md: {name} plot {png}")
open("README.md", "w").write(readme)
PY
exit $status

#!/usr/bin/env bash
# Release binary size per target (LTO, stripped: what ships), written into the size block of
# docs/benchmarks.md so the numbers there are always the last run's.
#   bash bench/size.sh                              # this machine's target, aarch64, armv7
#   TARGETS=aarch64-unknown-linux-gnu bash bench/size.sh
# Each release build takes minutes (one codegen unit, LTO); a progress line comes before each.
set -euo pipefail
cd "$(dirname "$0")/.."
host="$(rustc -vV | sed -n 's/^host: //p')"
targets="${TARGETS:-$host aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}"
# The aarch64 budget (8 MiB) is what a Pi image and an OTA update are planned around.
budget_aarch64=$((8 << 20))

rows=""
for t in $targets; do
    echo "== $t: cargo build --release" >&2
    cargo build --release --locked --target "$t" >&2
    bin="target/$t/release/edgegate"
    bytes="$(stat -c %s "$bin")"
    mib="$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
    note=""
    if [ "$t" = aarch64-unknown-linux-gnu ]; then
        left="$(awk -v b="$bytes" -v m="$budget_aarch64" 'BEGIN { printf "%.2f", (m - b) / 1048576 }')"
        note="budget 8 MiB: $left MiB left"
    fi
    echo "$t: $bytes bytes ($mib MiB)"
    grouped="$(sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$bytes")"
    rows+="| \`$t\` | $grouped | $mib MiB | $note |"$'\n'
done

stamp="$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' plus changes'), $(rustc -V | cut -d' ' -f1-2)"
block="<!-- size: written by bench/size.sh -->
$stamp:

| target | bytes | size | |
|---|---|---|---|
$rows<!-- size: end -->"
doc=docs/benchmarks.md
if grep -q '^<!-- size: written by bench/size.sh -->$' "$doc"; then
    BLOCK="$block" python3 - "$doc" <<'PY'
import os, re, sys
path = sys.argv[1]
text = open(path).read()
new = re.sub(r"<!-- size: written by bench/size.sh -->.*?<!-- size: end -->",
             lambda _: os.environ["BLOCK"], text, count=1, flags=re.S)
open(path, "w").write(new)
PY
    echo "updated the size block of $doc" >&2
else
    echo "no size block in $doc; add this where it belongs:" >&2
    echo "$block"
fi

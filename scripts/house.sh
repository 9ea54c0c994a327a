#!/usr/bin/env bash
# Checks the plan of the house that the compiler does not: src/config/ is a leaf toolkit that
# imports nothing else of the crate (the site file and the stages import it, never the reverse),
# modules live in the folders they are named by (no `#[path]`, which fakes a folder), and no
# file under src/ is over 600 lines (one that is usually holds two jobs).
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
# Code lines only: a comment may name other modules.
code() { grep -rnE "$1" src/config --include='*.rs' | grep -vE '^[^:]+:[0-9]+:\s*//' || true; }

# `crate::` paths other than `crate::config`, `edgegate::` (the crate by name), and `super::`
# from src/config/mod.rs (the crate root) or `super::super::` from a file directly in src/config/.
bad="$(code '(crate|edgegate)::' | grep -vE '(crate|edgegate)::config\b' || true)"
bad+="$(grep -nE '\bsuper::' src/config/mod.rs | sed 's|^|src/config/mod.rs:|' || true)"
for f in src/config/*.rs; do
    bad+="$(grep -nE '\bsuper::super::' "$f" | sed "s|^|$f:|" || true)"
done
if [ -n "$bad" ]; then
    echo "src/config/ must import nothing else of the crate (put the type beside its stage):"
    echo "$bad"
    fail=1
fi
paths="$(grep -rnE '#\[path' src --include='*.rs' || true)"
if [ -n "$paths" ]; then
    echo "no #[path] under src/: make the module's folder (name.rs -> name/mod.rs beside its parts):"
    echo "$paths"
    fail=1
fi
long="$(find src -name '*.rs' -exec awk 'END { if (NR > 600) print FILENAME ": " NR " lines" }' {} \;)"
if [ -n "$long" ]; then
    echo "files over 600 lines under src/ (split the second job out):"
    echo "$long"
    fail=1
fi
exit $fail

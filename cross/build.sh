#!/usr/bin/env bash
# Builds the release binary for every Pi target and prints each stripped size.
#   bash cross/build.sh            # with Debian's cross compilers (.cargo/config.toml)
#   CARGO=cross bash cross/build.sh  # in cross's containers (Cross.toml), ARMv6 included
# Targets whose Rust standard library or C compiler is missing are reported and skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo_cmd="${CARGO:-cargo}"
targets="${TARGETS:-aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf arm-unknown-linux-gnueabihf}"
status=0
for t in $targets; do
    if [ "$cargo_cmd" = cargo ] && ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
        echo "$t: skipped (rustup target add $t)"
        continue
    fi
    if ! "$cargo_cmd" build --release --locked --target "$t" >"target/cross-$t.log" 2>&1; then
        echo "$t: FAILED (see target/cross-$t.log)"
        status=1
        continue
    fi
    bin="target/$t/release/edgegate"
    echo "$t: $(stat -c %s "$bin") bytes ($(file -b "$bin" | cut -d, -f1-2))"
done
exit $status

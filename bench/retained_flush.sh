#!/usr/bin/env bash
# Disk bytes the real gateway writes per reading with a healthy uplink, by `buffer.retained_flush`
# (results in docs/benchmarks.md, "Retained coalescing (issue 14)"). DEVICES simulated sensors,
# one reading every INTERVAL each, forwarded to a Mosquitto upstream that acknowledges at once;
# the default 200 ms commit interval. Bytes are the gateway's `/proc/PID/io` write_bytes (the
# SQLite database and its WAL, checkpoints included) over WINDOW seconds, from 2 s after start.
# Disk bytes do not depend on the optimisation level, so the debug build serves. UPLINK=none runs
# without an uplink, so nothing but the local bus's state is written.
# Usage: [UPLINK=none] bench/retained_flush.sh [BINARY] [FLUSHES] [DEVICES] [INTERVAL] [WINDOW]
#   e.g. bench/retained_flush.sh target/debug/edgegate "0s 10s 60s" 20 1s 62
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/edgegate}
flushes=${2:-"0s 10s 60s"}
devices=${3:-20}
interval=${4:-1s}
window=${5:-62}
[ -x "$bin" ] || cargo build --release -q --locked
. bench/common.sh
start_upstream
machine
uplink=${UPLINK:-mosquitto}
echo "$devices sensors, one reading every $interval each, uplink: $uplink, ${window} s window"

for flush in $flushes; do
    port=$(free_port)
    rm -rf "$tmp/data"
    {
        printf 'site: bench\ngateway: gw\nbroker:\n  listen: 127.0.0.1:%s\n  sys_interval: 0s\n' "$port"
        [ "$uplink" = none ] || printf 'uplink:\n  host: 127.0.0.1\n  port: %s\n' "$up"
        printf 'buffer:\n  dir: %s/data\n  retained_flush: %s\ndevices:\n' "$tmp" "$flush"
        for i in $(seq 1 "$devices"); do
            printf '  t%s:\n    sim: {kind: temperature, interval: %s}\n' "$i" "$interval"
        done
    } >"$tmp/site.yaml"
    RUST_LOG=warn "$bin" run --config "$tmp/site.yaml" 2>"$tmp/edgegate.log" &
    epid=$!
    pids+=("$epid")
    sleep 2
    before=$(written "$epid")
    sleep "$window"
    after=$(written "$epid")
    kill -TERM "$epid"
    wait "$epid" || true
    readings=$(awk -v d="$devices" -v w="$window" -v i="$interval" 'BEGIN {
        s = i; ms = (s ~ /ms$/); sub(/m?s$/, "", s); if (ms) s /= 1000; printf "%d", d * w / s }')
    awk -v f="$flush" -v b=$((after - before)) -v n="$readings" -v w="$window" 'BEGIN {
        printf "  retained_flush %-4s %9d bytes written in %d s, %7.0f bytes per reading (%d readings)\n", f, b, w, b / n, n }'
done

#!/usr/bin/env bash
# Live reading -> upstream subscriber latency through the real gateway, healthy link (results in
# docs/benchmarks.md, "Write-behind (issue 14)"): 10 simulated sensors at 100 ms (100 readings/s)
# forwarded at QoS 1 to a Mosquitto on loopback; a paho subscriber there measures from each
# reading's `ts` to its arrival, for WINDOW seconds, default 200 ms commits. `ts` has millisecond
# precision, so figures under 1 ms are not resolved. Needs paho-mqtt (scripts/test.sh installs it
# into target/pyenv).
# Usage: bench/live_latency.sh [WINDOW_SECONDS] BINARY...
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-30}
shift || true
[ $# -gt 0 ] || set -- target/release/edgegate
py=${EDGEGATE_PAHO_PYTHON:-target/pyenv/bin/python}
. bench/common.sh
start_upstream 'set_tcp_nodelay true'
machine "; window ${window} s"
for bin in "$@"; do
    rm -rf "$tmp/data"
    {
        printf 'site: demo\ngateway: gw01\nbroker:\n  listen: 127.0.0.1:%s\nuplink:\n  host: 127.0.0.1\n  port: %s\nbuffer:\n  dir: %s/data\ndevices:\n' "$(free_port)" "$up" "$tmp"
        for i in $(seq 1 10); do
            printf '  t%s:\n    sim: {kind: temperature, interval: 100ms, noise: 0.2}\n' "$i"
        done
    } >"$tmp/site.yaml"
    RUST_LOG=warn "$bin" run --config "$tmp/site.yaml" 2>"$tmp/edgegate.log" &
    epid=$!
    pids+=("$epid")
    sleep 2
    printf '%-28s ' "$bin"
    "$py" bench/live_latency.py "$up" 'demo/gw01/+/temperature' "$window"
    kill -TERM "$epid"
    wait "$epid" || true
done

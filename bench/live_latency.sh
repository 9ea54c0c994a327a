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
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT
up=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' "$up" >"$tmp/up.conf"
"$mosq" -c "$tmp/up.conf" >"$tmp/up.log" 2>&1 &
pids+=($!)
echo "machine: $(nproc) cores, $(uname -m), load average $(cut -d' ' -f1-3 /proc/loadavg); window ${window} s"
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

#!/usr/bin/env bash
# CPU of the gateway at 1,000 readings/s (10 simulated sensors at 10 ms), with one subscriber on
# the local bus and one upstream, healthy link (a Mosquitto on loopback), default 200 ms commits:
# utime + stime of the gateway process (/proc/PID/stat) over WINDOW seconds after a 3 s warm-up,
# as a share of one core. Results in docs/benchmarks.md, "Write-behind (issue 14)".
# Usage: bench/cpu.sh [WINDOW_SECONDS] BINARY...   (release builds: CPU depends on optimisation)
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-60}
shift || true
[ $# -gt 0 ] || set -- target/release/edgegate
. bench/common.sh
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
start_upstream
machine "; window ${window} s"
for bin in "$@"; do
    rm -rf "$tmp/data"
    local_port=$(free_port)
    {
        printf 'site: demo\ngateway: gw01\nbroker:\n  listen: 127.0.0.1:%s\nuplink:\n  host: 127.0.0.1\n  port: %s\nbuffer:\n  dir: %s/data\ndevices:\n' "$local_port" "$up" "$tmp"
        for i in $(seq 1 10); do
            printf '  t%s:\n    sim: {kind: temperature, interval: 10ms, noise: 0.2}\n' "$i"
        done
    } >"$tmp/site.yaml"
    RUST_LOG=warn "$bin" run --config "$tmp/site.yaml" 2>"$tmp/edgegate.log" &
    epid=$!
    pids+=("$epid")
    sleep 1
    mosquitto_sub -h 127.0.0.1 -p "$local_port" -t 'demo/#' >/dev/null 2>&1 &
    pids+=($!)
    mosquitto_sub -h 127.0.0.1 -p "$up" -t 'demo/#' -q 1 >"$tmp/up.txt" 2>&1 &
    spid=$!
    pids+=("$spid")
    sleep 2
    t0=$(ticks "$epid")
    n0=$(wc -l <"$tmp/up.txt")
    sleep "$window"
    t1=$(ticks "$epid")
    n1=$(wc -l <"$tmp/up.txt")
    kill -TERM "$epid"
    wait "$epid" || true
    kill "$spid" 2>/dev/null || true
    awk -v b="$bin" -v t=$((t1 - t0)) -v hz="$hz" -v w="$window" -v n=$((n1 - n0)) 'BEGIN {
        printf "%-28s %5.1f%% of one core (%d messages upstream, %.0f/s)\n", b, 100 * t / hz / w, n, n / w }'
done

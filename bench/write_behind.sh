#!/usr/bin/env bash
# What the real gateway costs the SD card (results in docs/benchmarks.md, "Write-behind
# (issue 14)"): disk bytes per reading, and fsync'd commits per minute, for each BINARY given,
# at the demo site's rate (config/demo.yaml: 6 simulated sensors) and at 100 readings/s (10
# sensors every 100 ms), with the uplink healthy (a Mosquitto on loopback that acknowledges at
# once) and down (nothing listening), at the default 200 ms commit interval.
#   bytes    `write_bytes` of /proc/PID/io over the window (database, WAL, checkpoints)
#   commits  fsync/fdatasync calls of the process over the window (strace -f -c), per minute
#   payload  the readings' payload bytes seen on the local bus over the window
# Disk bytes and commits do not depend on the optimisation level: debug builds serve.
# Usage: [SITES="demo 100/s"] [LINKS="healthy down"] bench/write_behind.sh [WINDOW_SECONDS] BINARY...
#   e.g. bench/write_behind.sh 60 before/edgegate target/debug/edgegate
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-60}
shift || true
[ $# -gt 0 ] || set -- target/debug/edgegate
command -v mosquitto_sub >/dev/null || { echo "needs mosquitto-clients"; exit 1; }
command -v strace >/dev/null || { echo "needs strace (apt-get install strace)"; exit 1; }
. bench/common.sh
start_upstream
down=$(free_port)
machine "; window ${window} s"

# The demo site with its ports and data directory moved here; `uplink_port` as given.
demo() {
    sed -e "s/127.0.0.1:1883/127.0.0.1:$1/" -e "s/port: 1884/port: $2/" \
        -e "s/127.0.0.1:9100/127.0.0.1:$(free_port)/" -e "s|dir: data|dir: $tmp/data|" \
        -e "s/127.0.0.1:1885/127.0.0.1:$(free_port)/" config/demo.yaml
}
# 10 sensors at 100 ms, everything forwarded at QoS 1.
hundred() {
    printf 'site: demo\ngateway: gw01\nbroker:\n  listen: 127.0.0.1:%s\nuplink:\n  host: 127.0.0.1\n  port: %s\n  reconnect_min: 1s\nbuffer:\n  dir: %s/data\n  commit_interval: 200ms\ndevices:\n' "$1" "$2" "$tmp"
    for i in $(seq 1 10); do
        printf '  t%s:\n    sim: {kind: temperature, interval: 100ms, noise: 0.2}\n' "$i"
    done
}

printf '%-28s %-6s %-8s %9s %10s %10s %8s %12s\n' binary site uplink readings payload_B disk_B x_payload commits/min
for bin in "$@"; do
    for site in ${SITES:-demo 100/s}; do
        for link in ${LINKS:-healthy down}; do
            port=$(free_port)
            uport=$up
            [ "$link" = down ] && uport=$down
            rm -rf "$tmp/data"
            if [ "$site" = demo ]; then demo "$port" "$uport"; else hundred "$port" "$uport"; fi >"$tmp/site.yaml"
            RUST_LOG=warn "$bin" run --config "$tmp/site.yaml" 2>"$tmp/edgegate.log" &
            epid=$!
            pids+=("$epid")
            sleep 3
            timeout "$window" mosquitto_sub -h 127.0.0.1 -p "$port" -t 'demo/gw01/+/+' -v >"$tmp/bus.txt" 2>/dev/null &
            spid=$!
            timeout "$window" strace -f -qq -c -e trace=fsync,fdatasync -p "$epid" -o "$tmp/strace.txt" 2>/dev/null &
            tpid=$!
            before=$(written "$epid")
            sleep "$window"
            after=$(written "$epid")
            wait "$spid" 2>/dev/null || true
            wait "$tpid" 2>/dev/null || true
            kill -TERM "$epid"
            wait "$epid" || true
            # Readings only (device status lines are not readings); payload = line minus topic.
            read -r n payload < <(awk '$1 !~ /\/status$/ && /"seq":/ { n++; b += length($0) - length($1) - 1 } END { printf "%d %d\n", n, b }' "$tmp/bus.txt")
            syncs=$(awk '$NF == "fsync" || $NF == "fdatasync" { s += $4 } END { print s + 0 }' "$tmp/strace.txt")
            awk -v bin="$bin" -v site="$site" -v link="$link" -v n="$n" -v p="$payload" \
                -v d=$((after - before)) -v s="$syncs" -v w="$window" 'BEGIN {
                printf "%-28s %-6s %-8s %9d %10d %10d %8.2f %12.1f\n", bin, site, link, n, p, d, (p > 0 ? d / p : 0), s * 60 / w }'
        done
    done
done

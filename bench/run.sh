#!/usr/bin/env bash
# Data-path benchmarks (results go in docs/benchmarks.md):
#   ingest  readings/s through normalize -> outbox commit
#   drain   a buffered backlog delivered to a local Mosquitto at QoS 1
#   peer    Mosquitto's own client (mosquitto_pub -q 1 -l) publishing the same number of
#           messages to the same broker in the same run
#   paced   disk bytes per reading at 100 readings/s for 60 s
#   live    latency of live readings at 100/s while the backlog drains
# Usage: bench/run.sh [READINGS] [BACKLOG] [PACED_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
readings=${1:-200000}
backlog=${2:-100000}
paced=${3:-60}
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] && command -v mosquitto_pub >/dev/null || { echo "needs mosquitto and mosquitto-clients (apt-get install mosquitto mosquitto-clients)"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
trap 'kill $mpid 2>/dev/null; rm -rf "$tmp"' EXIT
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' "$port" > "$tmp/m.conf"
"$mosq" -c "$tmp/m.conf" >/dev/null 2>&1 & mpid=$!
sleep 0.5

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $("$mosq" -h 2>/dev/null | head -1)"
cargo build --release --bench pipeline -q 2>/dev/null || true
EDGEGATE_BENCH=1 cargo bench -q --bench pipeline -- --readings "$readings" --backlog "$backlog" \
    --broker-port "$port" --rate 100 --seconds "$paced" --live-rate 100

payload='{"value":21.53,"unit":"degC","ts":"2026-11-22T10:00:00.123Z","quality":"good","seq":1842}'
for _ in $(seq "$backlog"); do printf '%s\n' "$payload"; done > "$tmp/lines"
start=$(date +%s.%N)
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t bench/peer/temperature -l < "$tmp/lines"
end=$(date +%s.%N)
python3 -c "n=$backlog; s=$end-$start; print(f'peer: mosquitto_pub -q 1 -l published {n} messages in {s:.2f}s = {n/s:.0f} msg/s')"

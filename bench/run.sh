#!/usr/bin/env bash
# Data-path benchmarks (results go in docs/benchmarks.md):
#   ingest  readings/s through normalize -> outbox commit
#   drain   a buffered backlog delivered to a local Mosquitto at QoS 1
#   peer    Mosquitto's own QoS 1 ceiling, 1 publisher -> 1 subscriber, measured in the same
#           run on the same broker with mqttwrk (installed with cargo when missing)
#   paced   disk bytes per reading at 100 readings/s for 60 s
#   live    latency of live readings at 100/s while the backlog drains
#   drain2  (with QOS2_BACKLOG) the same at QoS 2, next to mqttwrk's own QoS 2 ceiling
# Usage: bench/run.sh [READINGS] [BACKLOG] [PACED_SECONDS] [COMMIT_MS] [QOS2_BACKLOG]
set -euo pipefail
cd "$(dirname "$0")/.."
readings=${1:-200000}
backlog=${2:-100000}
paced=${3:-60}
commit_ms=${4:-200}
backlog_qos2=${5:-0}
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] && command -v mosquitto_pub >/dev/null || { echo "needs mosquitto and mosquitto-clients (apt-get install mosquitto mosquitto-clients)"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
trap 'kill $mpid 2>/dev/null; rm -rf "$tmp"' EXIT
# set_tcp_nodelay: with Nagle on, Mosquitto holds its small acknowledgements for the peer's
# delayed ACKs and QoS 2 (four packets a message) crawls, for edgegate and mqttwrk alike.
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\n' "$port" > "$tmp/m.conf"
"$mosq" -c "$tmp/m.conf" >/dev/null 2>&1 & mpid=$!
sleep 0.5

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $("$mosq" -h 2>/dev/null | head -1)"
cargo build --release --bench pipeline -q 2>/dev/null || true
EDGEGATE_BENCH=1 cargo bench -q --bench pipeline -- --readings "$readings" --backlog "$backlog" \
    --broker-port "$port" --rate 100 --seconds "$paced" --live-rate 100 --commit-ms "$commit_ms" \
    --backlog-qos2 "$backlog_qos2"

command -v mqttwrk >/dev/null || [ -x "$HOME/.cargo/bin/mqttwrk" ] || cargo install -q mqttwrk --locked
wrk=$(command -v mqttwrk || echo "$HOME/.cargo/bin/mqttwrk")
# 89-byte payloads, the size of a reading; QoS 1 both ways; the window the uplink uses (100).
echo "peer: mqttwrk bench -p 1 -s 1 --publish-qos 1 --subscribe-qos 1 -m 89 -i 100 -n $backlog"
"$wrk" bench -S 127.0.0.1 -P "$port" -n "$backlog" -p 1 -s 1 --publish-qos 1 --subscribe-qos 1 \
    -m 89 -i 100 --show-pub-stat --show-sub-stat 2>&1 | grep -E 'Aggregate|throughput|outgoing_publish|publish_count'
if [ "$backlog_qos2" -gt 0 ]; then
    # 16 in flight, as the uplink keeps at QoS 2 (with 100, Mosquitto holds most back for seconds).
    echo "peer: mqttwrk bench -p 1 -s 1 --publish-qos 2 --subscribe-qos 2 -m 89 -i 16 -n $backlog_qos2"
    "$wrk" bench -S 127.0.0.1 -P "$port" -n "$backlog_qos2" -p 1 -s 1 --publish-qos 2 --subscribe-qos 2 \
        -m 89 -i 16 --show-pub-stat --show-sub-stat 2>&1 | grep -E 'Aggregate|throughput|outgoing_publish|publish_count'
fi

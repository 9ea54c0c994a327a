#!/usr/bin/env bash
# QoS 1 publish throughput into the local broker when the acknowledgement waits for the outbox
# commit (the topic is forwarded) and when it does not (same gateway build, the topic is not
# forwarded), next to Mosquitto's QoS 1 in the same run. Results in docs/benchmarks.md,
# "Broker: ack after commit (issue 3)".
#   mqttwrk bench: PUBLISHERS publishers x MESSAGES QoS 1 messages of 64 bytes, in-flight window
#   100 each, no subscriber; throughput is what they got acknowledged per second.
# The gateway forwards to a Mosquitto upstream (so rows leave the buffer as they would on site).
# Usage: bench/durable_ack.sh [MESSAGES] [COMMIT_INTERVALS] [PUBLISHERS]
#   e.g. bench/durable_ack.sh 20000 "200ms 50ms" "1 10"
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}
intervals=${2:-"200ms 50ms"}
publishers=${3:-"1 10"}
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || { echo "needs mosquitto (apt-get install mosquitto)"; exit 1; }
command -v mqttwrk >/dev/null || [ -x "$HOME/.cargo/bin/mqttwrk" ] || cargo install -q mqttwrk --locked
wrk=$(command -v mqttwrk || echo "$HOME/.cargo/bin/mqttwrk")
bin=${CARGO_TARGET_DIR:-target}/release/edgegate

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT

cargo build --release -q --locked
up=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' "$up" >"$tmp/up.conf"
"$mosq" -c "$tmp/up.conf" >"$tmp/up.log" 2>&1 &
pids+=($!)
peer=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\n' "$peer" >"$tmp/peer.conf"
"$mosq" -c "$tmp/peer.conf" >"$tmp/peer.log" 2>&1 &
pids+=($!)

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $("$mosq" -h 2>/dev/null | head -1)"

load() { # label port publishers
    timeout 300 "$wrk" bench -S 127.0.0.1 -P "$2" -p "$3" -s 0 -n "$messages" -m 64 \
        --publish-qos 1 -i 100 --show-pub-stat 2>&1 | awk -v name="$1" '
        /Aggregate PubStats/ { agg = 1 }
        /Aggregate SubStats/ { agg = 0 }
        agg && $1 == "throughput:" { t = $2 + 0 }
        /50 percentile/ { p50 = p50 " " $4 }
        END { if (t) printf "  %-38s %9.0f msg/s acknowledged (per-publisher p50 ack latency ms:%s)\n", name, t, p50;
              else printf "  %-38s did not finish within 300 s\n", name }'
}

for ci in $intervals; do
    for forward in "hello/#" "elsewhere/#"; do
        port=$(free_port)
        rm -rf "$tmp/data"
        cat >"$tmp/site.yaml" <<YAML
site: bench
gateway: gw
broker:
  listen: 127.0.0.1:$port
uplink:
  host: 127.0.0.1
  port: $up
  forward: ["$forward"]
buffer:
  dir: $tmp/data
  commit_interval: $ci
YAML
        RUST_LOG=warn "$bin" run --config "$tmp/site.yaml" 2>"$tmp/edgegate.log" &
        gw=$!
        sleep 1
        case $forward in hello/*) what="forwarded (ack after commit)" ;; *) what="not forwarded (ack at once)" ;; esac
        for p in $publishers; do
            load "commit $ci, $p pub, $what" "$port" "$p"
        done
        kill "$gw"
        wait "$gw" 2>/dev/null || true
    done
done
for p in $publishers; do
    load "peer: mosquitto, $p pub" "$peer" "$p"
done

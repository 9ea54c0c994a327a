#!/usr/bin/env bash
# Local broker vs Debian's Mosquitto, same load tool, same run (results in docs/benchmarks.md,
# "Local broker (issue 3)"):
#   throughput  mqttwrk: QoS 0 1->1, QoS 1 1->1, QoS 0 1->10 fan-out, 64-byte payloads
#   rss         idle, peak under that load (VmHWM), and per idle connection (IDLE connections)
# The gateway runs from a release build with a broker-only site (no devices, no uplink).
# Usage: bench/broker.sh [MESSAGES] [IDLE]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-200000}
idle=${2:-2000}
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || { echo "needs mosquitto (apt-get install mosquitto)"; exit 1; }
command -v mqttwrk >/dev/null || [ -x "$HOME/.cargo/bin/mqttwrk" ] || cargo install -q mqttwrk --locked
wrk=$(command -v mqttwrk || echo "$HOME/.cargo/bin/mqttwrk")
ulimit -n $((idle * 2 + 1024)) 2>/dev/null || ulimit -n 4096

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
eport=$(free_port)
mport=$(free_port)
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT

cargo build --release -q --locked
cat > "$tmp/site.yaml" <<YAML
site: bench
gateway: gw
broker:
  listen: 127.0.0.1:$eport
  max_connections: $((idle + 100))
buffer:
  dir: $tmp/data
YAML
# Mosquitto with the same per-client limits as the gateway's defaults.
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\nmax_inflight_messages 32\nmax_queued_messages 1000\n' \
    "$mport" > "$tmp/m.conf"
RUST_LOG=warn target/release/edgegate run --config "$tmp/site.yaml" 2>"$tmp/edgegate.log" & epid=$!
"$mosq" -c "$tmp/m.conf" >"$tmp/mosquitto.log" 2>&1 & mpid=$!
pids+=("$epid" "$mpid")
sleep 1

kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $("$mosq" -h 2>/dev/null | head -1), $("$wrk" --version 2>/dev/null || echo mqttwrk)"
echo "idle RSS: edgegate $(kib "$epid" VmRSS) KiB, mosquitto $(kib "$mpid" VmRSS) KiB"

# Idle connections first, while neither process has freed memory it could reuse for them.
for who in edgegate mosquitto; do
    if [ "$who" = edgegate ]; then pid=$epid port=$eport; else pid=$mpid port=$mport; fi
    before=$(kib "$pid" VmRSS)
    coproc IDLE { python3 bench/idle_conns.py "$port" "$idle"; }
    read -r line <&"${IDLE[0]}"
    [ "$line" = ready ] || { echo "idle connections failed: $line"; exit 1; }
    sleep 1
    after=$(kib "$pid" VmRSS)
    echo "$who: $idle idle connections: RSS $before -> $after KiB, $(( (after - before) * 1024 / idle )) B per connection"
    eval "exec ${IDLE[1]}>&-"
    wait "$IDLE_PID" 2>/dev/null || true
    sleep 1
done

run() { # name port args...
    local name=$1 port=$2
    shift 2
    # Aggregate publisher and subscriber stats: messages/s each, and how many arrived.
    timeout 120 "$wrk" bench -S 127.0.0.1 -P "$port" -n "$messages" -m 64 "$@" 2>&1 | awk -v name="$name" '
        /^Aggregate PubStats/ { s = "pub" }
        /^Aggregate SubStats/ { s = "sub" }
        s && $1 == "throughput:" { t[s] = $2 + 0 }
        s == "sub" && $1 == "publish_count:" { n = $2 + 0 }
        END { if (n) printf "  %-9s publish %9.0f msg/s, receive %9.0f msg/s (%d received)\n", name, t["pub"], t["sub"], n;
              else printf "  %-9s did not finish within 120 s\n", name }'
}
for case in "qos0 1->1|-p 1 -s 1 --publish-qos 0 --subscribe-qos 0" \
            "qos1 1->1|-p 1 -s 1 --publish-qos 1 --subscribe-qos 1 -i 100" \
            "qos0 1->10|-p 1 -s 10 --publish-qos 0 --subscribe-qos 0"; do
    name=${case%%|*}
    read -r -a args <<<"${case#*|}"
    echo "$name"
    run edgegate "$eport" "${args[@]}" || true
    run mosquitto "$mport" "${args[@]}" || true
done
echo "peak RSS under load (VmHWM): edgegate $(kib "$epid" VmHWM) KiB, mosquitto $(kib "$mpid" VmHWM) KiB"


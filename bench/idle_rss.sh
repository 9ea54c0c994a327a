#!/usr/bin/env bash
# RSS per idle connection of the gateway's local broker, MQTT 3.1.1 and MQTT 5 clients (results in
# docs/benchmarks.md, "MQTT 5 on the local broker (issue 3)"). Each kind runs against a fresh
# gateway process, so neither can reuse memory the other freed.
# Usage: bench/idle_rss.sh [BINARY] [IDLE]   (default: target/release/edgegate, 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/edgegate}
idle=${2:-2000}
[ -x "$bin" ] || cargo build --release -q --locked
ulimit -n $((idle * 2 + 1024)) 2>/dev/null || ulimit -n 4096
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
tmp=$(mktemp -d)
epid=
trap '[ -n "$epid" ] && kill "$epid" 2>/dev/null; rm -rf "$tmp"' EXIT

for kind in 3.1.1 5; do
    port=$(free_port)
    cat > "$tmp/site.yaml" <<YAML
site: bench
gateway: gw
broker:
  listen: 127.0.0.1:$port
  max_connections: $((idle + 100))
  sys_interval: 0s
buffer:
  dir: $tmp/data-$kind
YAML
    RUST_LOG=warn "$bin" run --config "$tmp/site.yaml" 2>"$tmp/edgegate.log" & epid=$!
    sleep 1
    before=$(kib "$epid" VmRSS)
    flag=; [ "$kind" = 5 ] && flag=--v5
    coproc IDLE { python3 bench/idle_conns.py $flag "$port" "$idle" 2>&1; }
    read -r line <&"${IDLE[0]}" || line="no answer"
    if [ "$line" = ready ]; then
        sleep 1
        after=$(kib "$epid" VmRSS)
        echo "MQTT $kind: $idle idle connections: RSS $before -> $after KiB, $(( (after - before) * 1024 / idle )) B per connection"
    else
        echo "MQTT $kind: idle connections failed: $line"
    fi
    eval "exec ${IDLE[1]}>&-"
    wait "$IDLE_PID" 2>/dev/null || true
    kill "$epid"; wait "$epid" 2>/dev/null || true; epid=
done

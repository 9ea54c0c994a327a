# Shared by the gateway benchmarks under bench/ (sourced, not run): a scratch directory removed
# at exit with every process started into `pids`, free loopback ports, a process's disk bytes,
# and an upstream Mosquitto.

mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || { echo "needs mosquitto (apt-get install mosquitto)"; exit 1; }
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# `write_bytes` of process $1 (what it caused to be written to storage).
written() { awk '$1 == "write_bytes:" {print $2}' "/proc/$1/io"; }
# Starts a Mosquitto on a free loopback port with any extra config lines given; sets `up`.
start_upstream() {
    up=$(free_port)
    { printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$up"; printf '%s\n' "$@"; } >"$tmp/up.conf"
    "$mosq" -c "$tmp/up.conf" >"$tmp/up.log" 2>&1 &
    pids+=($!)
}
machine() { echo "machine: $(nproc) cores, $(uname -m), load average $(cut -d' ' -f1-3 /proc/loadavg)$*"; }

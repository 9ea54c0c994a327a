#!/usr/bin/env python3
"""Start-to-ready time and idle RSS of the gateway with the demo config.

    python3 bench/deploy.py [BINARY] [RUNS]

Binds a notify socket as systemd would, starts `BINARY run --config <demo copy>` with
NOTIFY_SOCKET set, and measures the time from spawn to READY=1; then lets it idle for 10 s and
reads VmRSS from /proc. The demo config is copied with its listeners on port 0 and its uplink
pointed at a closed port (the gateway buffers, as on a site whose link is down), so the run
needs nothing else on the machine. Prints per-run numbers and the median.
"""
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(root, "target/release/edgegate")
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
idle_s = 10


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def one_run():
    with tempfile.TemporaryDirectory() as d:
        text = open(os.path.join(root, "config/demo.yaml")).read()
        text = text.replace("listen: 127.0.0.1:1883", "listen: 127.0.0.1:0")
        text = text.replace("listen: 127.0.0.1:9100", "listen: 127.0.0.1:0")
        text = text.replace("port: 1884", "port: %d" % closed_port())
        cfg = os.path.join(d, "demo.yaml")
        open(cfg, "w").write(text)
        path = os.path.join(d, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        env = dict(os.environ, NOTIFY_SOCKET=path, RUST_LOG="warn")
        start = time.monotonic()
        p = subprocess.Popen([binary, "run", "--config", cfg], cwd=d, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                msg = sock.recv(4096).decode()
                if "READY=1" in msg.splitlines():
                    ready = time.monotonic() - start
                    break
            time.sleep(idle_s)
            status = open("/proc/%d/status" % p.pid).read()
            rss_kib = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=15)
            sock.close()
        return ready, rss_kib


readies, rsses = [], []
for i in range(runs):
    ready, rss = one_run()
    readies.append(ready)
    rsses.append(rss)
    print("run %2d: ready %.1f ms, idle RSS %.2f MiB" % (i + 1, ready * 1000, rss / 1024))
print("median: ready %.1f ms (max %.1f), idle RSS %.2f MiB (max %.2f)" % (
    statistics.median(readies) * 1000, max(readies) * 1000,
    statistics.median(rsses) / 1024, max(rsses) / 1024))

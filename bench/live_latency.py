"""Latency of live readings to an upstream subscriber: from each reading's `ts` (when the gateway
took it) to its arrival here, for `seconds`. Prints count, p50, p99 and max in ms.
Usage: live_latency.py PORT TOPIC SECONDS"""
import json
import sys
import threading
import time
from datetime import datetime

import paho.mqtt.client as mqtt

port, topic, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
lat = []
lock = threading.Lock()


def on_message(_c, _u, msg):
    now = time.time()
    try:
        v = json.loads(msg.payload)
        ts = datetime.fromisoformat(v["ts"].replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        return
    if v.get("replay"):
        return
    with lock:
        lat.append((now - ts) * 1000)


c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lat-{time.time_ns()}")
c.on_message = on_message
c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
c.connect("127.0.0.1", port)
c.loop_start()
time.sleep(seconds)
c.loop_stop()
with lock:
    s = sorted(lat)
if not s:
    print("no readings")
    sys.exit(1)
pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
print(f"{len(s)} readings: p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {s[-1]:.1f} ms")

"""Drives the local broker with the paho-mqtt client (MQTT 3.1.1) and prints what happened as
JSON for tests/broker/interop.rs to check. Usage: paho_interop.py PORT"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

HOST, PORT = "127.0.0.1", int(sys.argv[1])
V2 = mqtt.CallbackAPIVersion.VERSION2
TIMEOUT = 10
events = []
cond = threading.Condition()


def record(kind, **fields):
    with cond:
        events.append(dict(kind=kind, **fields))
        cond.notify_all()


def wait_for(pred, what):
    with cond:
        if not cond.wait_for(lambda: any(pred(e) for e in events), TIMEOUT):
            raise SystemExit(f"timed out waiting for {what}: {events}")


def client(cid, clean=True, sub=False):
    c = mqtt.Client(V2, client_id=cid, protocol=mqtt.MQTTv311, clean_session=clean)
    c.on_connect = lambda c, u, flags, rc, p: record(
        "connack", client=cid, rc=rc.value, session_present=bool(flags.session_present))
    if sub:
        c.on_subscribe = lambda c, u, mid, rcs, p: record(
            "suback", client=cid, codes=[r.value for r in rcs])
        c.on_message = lambda c, u, m: record(
            "message", client=cid, topic=m.topic, payload=m.payload.decode(),
            qos=m.qos, retain=bool(m.retain))
    c.connect(HOST, PORT, keepalive=30)
    c.loop_start()
    wait_for(lambda e: e["kind"] == "connack" and e["client"] == cid, f"{cid} CONNACK")
    return c


def msg_count(topic):
    with cond:
        return sum(1 for e in events if e["kind"] == "message" and e["topic"] == topic)


pub = client("paho-pub")
pub.publish("paho/retained", "kept", qos=1, retain=True).wait_for_publish(TIMEOUT)

sub = client("paho-sub", clean=False, sub=True)
sub.subscribe([("paho/#", 2)])
wait_for(lambda e: e["kind"] == "suback", "SUBACK")
wait_for(lambda e: e.get("topic") == "paho/retained", "the retained message")

for qos in (0, 1, 2):
    info = pub.publish(f"paho/q{qos}", f"qos{qos}", qos=qos)
    info.wait_for_publish(TIMEOUT)
for qos in (0, 1, 2):
    wait_for(lambda e, q=qos: e.get("topic") == f"paho/q{q}", f"paho/q{qos}")

# A client that vanishes without DISCONNECT: its will goes out.
gone = mqtt.Client(V2, client_id="paho-will", protocol=mqtt.MQTTv311)
gone.will_set("paho/will", "bye", qos=1)
gone.on_connect = lambda c, u, f, rc, p: record("connack", client="paho-will", rc=rc.value,
                                                session_present=False)
gone.connect(HOST, PORT, keepalive=30)
gone.loop_start()
wait_for(lambda e: e.get("client") == "paho-will", "paho-will CONNACK")
gone.loop_stop()
gone.socket().close()
wait_for(lambda e: e.get("topic") == "paho/will", "the will")

# Persistent session: a QoS 1 message published while the subscriber is away arrives after.
sub.disconnect()
sub.loop_stop()
pub.publish("paho/offline", "queued", qos=1).wait_for_publish(TIMEOUT)
sub.reconnect()
sub.loop_start()
wait_for(lambda e: e.get("topic") == "paho/offline", "the queued message")

pub.disconnect()
sub.disconnect()
with cond:
    print(json.dumps(events))

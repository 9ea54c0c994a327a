"""Drives the local broker with the paho-mqtt client and prints what happened as JSON for
tests/broker/interop.rs to check. Usage: paho_interop.py PORT [v5]: MQTT 3.1.1, or MQTT 5.0 with
subscription options, a subscription identifier, request/response properties and topic aliases."""
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


def run_v311():
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


def props_of(m):
    p = m.properties
    get = lambda name: getattr(p, name, None) if p is not None else None
    corr = get("CorrelationData")
    return dict(
        user=[list(kv) for kv in (get("UserProperty") or [])],
        response_topic=get("ResponseTopic"),
        correlation=corr.hex() if corr is not None else None,
        content_type=get("ContentType"),
        payload_format=get("PayloadFormatIndicator"),
        expiry=get("MessageExpiryInterval"),
        sub_ids=get("SubscriptionIdentifier"),
    )


def client5(cid, sub=False):
    c = mqtt.Client(V2, client_id=cid, protocol=mqtt.MQTTv5)

    def on_connect(c, u, flags, rc, p):
        record("connack", client=cid, rc=rc.value, session_present=bool(flags.session_present),
               receive_maximum=getattr(p, "ReceiveMaximum", None),
               topic_alias_max=getattr(p, "TopicAliasMaximum", None),
               assigned=getattr(p, "AssignedClientIdentifier", None))
    c.on_connect = on_connect
    c.on_publish = lambda c, u, mid, rc, p: record("puback", client=cid, mid=mid, rc=rc.value)
    if sub:
        c.on_subscribe = lambda c, u, mid, rcs, p: record(
            "suback", client=cid, codes=[r.value for r in rcs])
        c.on_message = lambda c, u, m: record(
            "message", client=cid, topic=m.topic, payload=m.payload.decode(), qos=m.qos,
            retain=bool(m.retain), **props_of(m))
    c.connect(HOST, PORT, keepalive=30, clean_start=True)
    c.loop_start()
    wait_for(lambda e: e["kind"] == "connack" and e["client"] == cid, f"{cid} CONNACK")
    return c


def run_v5():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    pub = client5("paho5-pub")
    pub.publish("paho5/retained", "kept", qos=1, retain=True).wait_for_publish(TIMEOUT)
    sub = client5("paho5-sub", sub=True)
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 7
    opts = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
    sub.subscribe([("paho5/#", opts)], properties=sp)
    wait_for(lambda e: e["kind"] == "suback", "SUBACK")
    wait_for(lambda e: e.get("topic") == "paho5/retained", "the retained message")

    # Request with properties; the subscriber must see them as sent.
    rp = Properties(PacketTypes.PUBLISH)
    rp.UserProperty = [("unit", "C"), ("unit", "F")]
    rp.ResponseTopic = "paho5/reply"
    rp.CorrelationData = b"\x01\x02"
    rp.ContentType = "text/plain"
    rp.PayloadFormatIndicator = 1
    rp.MessageExpiryInterval = 600
    pub.publish("paho5/req", "21.5", qos=1, properties=rp).wait_for_publish(TIMEOUT)
    wait_for(lambda e: e.get("topic") == "paho5/req", "the request")

    # No local: the subscriber's own publish does not come back to it.
    sub.publish("paho5/own", "mine", qos=1).wait_for_publish(TIMEOUT)
    # A topic alias from the publisher: set, then used with an empty topic.
    ap = Properties(PacketTypes.PUBLISH)
    ap.TopicAlias = 3
    pub.publish("paho5/aliased", "a1", qos=1, properties=ap).wait_for_publish(TIMEOUT)
    pub.publish("", "a2", qos=1, properties=ap).wait_for_publish(TIMEOUT)
    wait_for(lambda e: e.get("payload") == "a2", "the aliased message")
    # Nobody subscribes here: PUBACK 0x10.
    pub.publish("elsewhere", "x", qos=1).wait_for_publish(TIMEOUT)
    pub.disconnect()
    sub.disconnect()


if len(sys.argv) > 2 and sys.argv[2] == "v5":
    run_v5()
else:
    run_v311()
with cond:
    print(json.dumps(events))

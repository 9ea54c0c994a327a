//! The local broker over TCP: raw MQTT 3.1.1 bytes in, exact bytes out.

#[path = "broker/support.rs"]
mod support;

#[path = "broker/inproc.rs"]
mod inproc;

#[path = "broker/interop.rs"]
mod interop;

#[path = "broker/auth.rs"]
mod auth;

#[path = "broker/limits.rs"]
mod limits;

#[path = "broker/malformed.rs"]
mod malformed;

#[path = "broker/qos.rs"]
mod qos;

#[path = "broker/shared.rs"]
mod shared;

#[path = "broker/v5_lifetime.rs"]
mod v5_lifetime;

#[path = "broker/codec_props.rs"]
mod codec_props;

#[path = "broker/v5.rs"]
mod v5;

#[path = "broker/v5_disconnect.rs"]
mod v5_disconnect;

#[path = "broker/v5_flow.rs"]
mod v5_flow;

#[path = "broker/v5_messages.rs"]
mod v5_messages;

#[path = "broker/v5_subs.rs"]
mod v5_subs;

#[path = "support/mod.rs"]
mod gw;

#[path = "broker/process.rs"]
mod process;

#[path = "broker/persist.rs"]
mod persist;

#[path = "broker/persist_ids.rs"]
mod persist_ids;

#[path = "broker/persist_v5.rs"]
mod persist_v5;

#[path = "broker/persist_retained.rs"]
mod persist_retained;

#[path = "broker/order.rs"]
mod order;

use std::time::Duration;

use support::*;
use tokio::time::timeout;

#[tokio::test]
async fn connect_ping_and_first_packet_rules() {
    let b = Broker::start().await;
    let mut c = Client::open(b.addr()).await;
    c.send(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 1, b'x',
    ])
    .await;
    c.expect(&[0x20, 0x02, 0x00, 0x00]).await;
    c.send(&[0xc0, 0]).await;
    c.expect(&[0xd0, 0]).await;
    // A second CONNECT is a protocol violation.
    c.send(&connect("x", true, 0)).await;
    c.expect_closed().await;

    let mut c = Client::open(b.addr()).await;
    c.send(&[0xc0, 0]).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn connect_refusals() {
    let b = Broker::with(config(1, 10)).await;
    // Unsupported protocol level (6; 5 is MQTT 5) -> CONNACK 0x01, close.
    let mut c = Client::open(b.addr()).await;
    c.send(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 0, 0, 1, b'x',
    ])
    .await;
    c.expect(&[0x20, 2, 0, 1]).await;
    c.expect_closed().await;
    // Empty client id without clean session -> 0x02.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect("", false, 0)).await;
    c.expect(&[0x20, 2, 0, 2]).await;
    c.expect_closed().await;
    // Reserved flag bit -> close without CONNACK.
    let mut c = Client::open(b.addr()).await;
    c.send(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 0, 0, 1, b'x',
    ])
    .await;
    c.expect_closed().await;
    // max_connections = 1: the second client is refused with 0x03.
    let _first = b.client("one").await;
    let mut c = Client::open(b.addr()).await;
    c.send(&connect("two", true, 0)).await;
    c.expect(&[0x20, 2, 0, 3]).await;
    c.expect_closed().await;
    assert_eq!(b.bus.stats().clients_connected, 1);
}

/// An MQTT 3.1 CONNECT ("MQIsdp", level 3); `id` None leaves the client id field out.
fn connect31(id: Option<&str>, clean: bool) -> Vec<u8> {
    let mut body = field(b"MQIsdp");
    body.extend([3, if clean { 0x02 } else { 0 }, 0, 0]);
    if let Some(id) = id {
        body.extend(field(id.as_bytes()));
    }
    packet(0x10, &body)
}

/// MQTT 3.1 client ids are 1 to 23 characters (no assigned ids), and a 3.1 CONNACK's first
/// byte is reserved: no session-present bit even when a session was resumed.
#[tokio::test]
async fn mqtt31_client_ids_and_connack() {
    let b = Broker::start().await;
    for refused in [
        connect31(Some(""), true),
        connect31(None, true),
        connect31(Some(&"x".repeat(24)), true),
    ] {
        let mut c = Client::open(b.addr()).await;
        c.send(&refused).await;
        c.expect(&[0x20, 2, 0, 2]).await;
        c.expect_closed().await;
    }
    let id = "y".repeat(23);
    let mut c = Client::open(b.addr()).await;
    c.send(&connect31(Some(&id), false)).await;
    c.expect(&[0x20, 2, 0, 0]).await;
    c.subscribe(1, &[("t", 1)]).await;
    c.send(&[0xe0, 0]).await;
    c.expect_closed().await;
    let mut c = Client::open(b.addr()).await;
    c.send(&connect31(Some(&id), false)).await;
    c.expect(&[0x20, 2, 0, 0]).await;
    // The session was there: its subscription still delivers.
    let mut p = b.client("p").await;
    p.send(&publish("t", b"1", 0, 0, false, false)).await;
    c.expect(b"\x30\x04\x00\x01t1").await;
    assert_eq!(b.bus.stats().refused, 3);
}

#[tokio::test]
async fn empty_client_id_with_clean_session_gets_one() {
    let b = Broker::start().await;
    let _a = b.client("").await;
    let _b = b.client("").await;
    assert_eq!(b.bus.stats().clients_connected, 2);
}

#[tokio::test]
async fn subscribe_and_receive_qos0() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.send(&subscribe(1, &[("a/+", 0)])).await;
    sub.expect(&[0x90, 0x03, 0x00, 0x01, 0x00]).await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("a/b", b"hi", 0, 0, false, false)).await;
    sub.expect(b"\x30\x07\x00\x03a/bhi").await;
}

#[tokio::test]
async fn suback_codes_and_invalid_filters_close() {
    let b = Broker::start().await;
    let mut c = b.client("c").await;
    c.send(&subscribe(7, &[("a/#", 2), ("+/b", 1), ("c", 0)]))
        .await;
    c.expect(&[0x90, 5, 0, 7, 0x02, 0x01, 0x00]).await;
    c.send(&[0xa2, 5, 0, 8, 0, 1, b'a']).await;
    c.expect(&[0xb0, 2, 0, 8]).await;
    // Requested QoS 3 closes.
    c.send(&subscribe(9, &[("a", 3)])).await;
    c.expect_closed().await;
    // SUBSCRIBE with flags 0000 closes.
    let mut c = b.client("d").await;
    c.send(&[0x80, 6, 0, 1, 0, 1, b'a', 0]).await;
    c.expect_closed().await;
    // A malformed filter anywhere in SUBSCRIBE or UNSUBSCRIBE closes without an answer.
    for bad in ["a/#/b", "x+", "#a", ""] {
        let mut c = b.client("e").await;
        c.send(&subscribe(1, &[("fine", 0), (bad, 0)])).await;
        c.expect_closed().await;
        let mut c = b.client("e").await;
        let mut body = vec![0, 2];
        body.extend(field(bad.as_bytes()));
        c.send(&packet(0xa2, &body)).await;
        c.expect_closed().await;
    }
}

#[tokio::test]
async fn publish_to_wildcard_or_empty_topic_closes() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("#", 0)]).await;
    for bad in ["a/+", "a/#", "#", "+", ""] {
        let mut c = b.client("bad").await;
        c.send(&publish(bad, b"x", 0, 0, false, false)).await;
        c.expect_closed().await;
    }
    let mut c = b.client("good").await;
    c.send(&publish("a/b", b"x", 0, 0, false, false)).await;
    // The first thing the wildcard subscriber sees is the valid one.
    sub.expect(b"\x30\x06\x00\x03a/bx").await;
}

#[tokio::test]
async fn retained_message_reaches_late_subscriber_with_retain_bit() {
    let b = Broker::start().await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("r/t", b"21.5", 1, 3, true, false)).await;
    publ.expect(&puback(3)).await;
    publ.send(&publish("r/gone", b"x", 0, 0, true, false)).await;
    publ.send(&publish("r/gone", b"", 0, 0, true, false)).await; // deletes it
    publ.send(&[0xc0, 0]).await;
    publ.expect(&[0xd0, 0]).await;

    let mut late = b.client("late").await;
    late.subscribe(1, &[("r/#", 0)]).await;
    late.expect(b"\x31\x09\x00\x03r/t21.5").await;
    // A live message is forwarded with retain 0; it proves nothing for r/gone came before it.
    publ.send(&publish("r/live", b"1", 0, 0, true, false)).await;
    late.expect(b"\x30\x09\x00\x06r/live1").await;
    // Subscribing again re-sends the matching retained messages.
    late.subscribe(2, &[("r/t", 1)]).await;
    late.expect(b"\x33\x0b\x00\x03r/t\x00\x0121.5").await;
}

#[tokio::test]
async fn wildcards_dollar_topics_and_overlap() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("#", 0), ("+/x", 1), ("a/x", 0)]).await;
    let mut sys = b.client("sys").await;
    sys.subscribe(1, &[("$dev/#", 0)]).await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("$dev/x", b"no", 0, 0, false, false))
        .await;
    publ.send(&publish("a/x", b"yes", 1, 5, false, false)).await;
    publ.expect(&puback(5)).await;
    // One copy, at the highest granted QoS (1), packet id 1; nothing for $dev/x before it.
    sub.expect(b"\x32\x0a\x00\x03a/x\x00\x01yes").await;
    sub.send(&puback(1)).await;
    publ.send(&publish("b", b"z", 0, 0, false, false)).await;
    sub.expect(b"\x30\x04\x00\x01bz").await;
    // An explicit `$dev/#` does match it.
    sys.expect(b"\x30\x0a\x00\x06$dev/xno").await;
}

#[tokio::test]
async fn persistent_session_gets_queued_qos1_after_reconnect() {
    let b = Broker::start().await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("persist", false, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
    p.subscribe(1, &[("s/#", 1)]).await;
    p.send(&[0xe0, 0]).await;
    p.expect_closed().await;

    let mut publ = b.client("pub").await;
    publ.send(&publish("s/1", b"one", 1, 1, false, false)).await;
    publ.expect(&puback(1)).await;
    publ.send(&publish("s/0", b"qos0", 0, 0, false, false))
        .await;
    publ.send(&publish("s/2", b"two", 1, 2, false, false)).await;
    publ.expect(&puback(2)).await;

    let mut p = Client::open(b.addr()).await;
    p.send(&connect("persist", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    p.expect(b"\x32\x0a\x00\x03s/1\x00\x01one").await;
    p.expect(b"\x32\x0a\x00\x03s/2\x00\x02two").await;
    p.send(&puback(1)).await; // s/2 stays unacknowledged
    drop(p);

    // Unacknowledged messages are resent first, DUP=1, same packet id.
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("persist", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    p.expect(b"\x3a\x0a\x00\x03s/2\x00\x02two").await;
    p.send(&puback(2)).await;

    // Clean session discards it.
    drop(p);
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("persist", true, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
}

#[tokio::test]
async fn takeover_closes_old_connection() {
    let b = Broker::start().await;
    let mut old = b.client("same").await;
    let mut new = b.client("same").await;
    old.expect_closed().await;
    new.send(&[0xc0, 0]).await;
    new.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn takeover_carries_persistent_session_over() {
    let b = Broker::start().await;
    let mut old = Client::open(b.addr()).await;
    old.send(&connect("dev", false, 0)).await;
    old.expect(&[0x20, 2, 0, 0]).await;
    old.subscribe(1, &[("cmd/#", 1)]).await;
    let mut new = Client::open(b.addr()).await;
    new.send(&connect("dev", false, 0)).await;
    new.expect(&[0x20, 2, 1, 0]).await;
    old.expect_closed().await;
    // The subscription came along without subscribing again.
    b.bus
        .publish(edgegate::bus::Message {
            topic: "cmd/reboot".into(),
            payload: bytes::Bytes::from_static(b"1"),
            qos: 1,
            retain: false,
            props: None,
            origin: None,
        })
        .await;
    new.expect(b"\x32\x0f\x00\x0acmd/reboot\x00\x011").await;
}

#[tokio::test]
async fn offline_queue_drops_oldest_beyond_max_queued_messages() {
    let b = Broker::with(config(8, 2)).await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
    p.subscribe(1, &[("o", 1)]).await;
    p.send(&[0xe0, 0]).await;
    p.expect_closed().await;
    let mut publ = b.client("pub").await;
    for (pid, payload) in [(1u16, b"1"), (2, b"2"), (3, b"3")] {
        publ.send(&publish("o", payload, 1, pid, false, false))
            .await;
        publ.expect(&puback(pid)).await;
    }
    assert_eq!(b.bus.stats().dropped, 1);
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    p.expect(b"\x32\x06\x00\x01o\x00\x012").await;
    p.expect(b"\x32\x06\x00\x01o\x00\x023").await;
}

#[tokio::test]
async fn will_published_on_abrupt_close_not_after_disconnect() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("w/#", 1)]).await;

    let will = |topic| WillSpec {
        topic,
        payload: b"gone",
        qos: 1,
        retain: true,
    };
    let mut polite = Client::open(b.addr()).await;
    polite
        .send(&connect_will("polite", true, 0, Some(will("w/polite"))))
        .await;
    polite.expect(&[0x20, 2, 0, 0]).await;
    polite.send(&[0xe0, 0]).await;
    polite.expect_closed().await;

    let mut rude = Client::open(b.addr()).await;
    rude.send(&connect_will("rude", true, 0, Some(will("w/rude"))))
        .await;
    rude.expect(&[0x20, 2, 0, 0]).await;
    drop(rude);
    sub.expect(b"\x32\x0e\x00\x06w/rude\x00\x01gone").await;
    sub.send(&puback(1)).await;

    // The will was retained: a late subscriber gets it with the retain bit.
    let mut late = b.client("late").await;
    late.subscribe(1, &[("w/#", 0)]).await;
    late.expect(b"\x31\x0c\x00\x06w/rudegone").await;
}

#[tokio::test]
async fn keepalive_timeout_publishes_will_and_keepalive_0_stays() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await; // keepalive 0
    sub.subscribe(1, &[("ka", 0)]).await;
    let mut silent = Client::open(b.addr()).await;
    let will = WillSpec {
        topic: "ka",
        payload: b"dead",
        qos: 0,
        retain: false,
    };
    silent
        .send(&connect_will("silent", true, 1, Some(will)))
        .await;
    silent.expect(&[0x20, 2, 0, 0]).await;
    // Closed after 1.5 s of silence, will delivered.
    silent.expect_closed().await;
    sub.expect(b"\x30\x08\x00\x02kadead").await;
    // The keepalive-0 client, silent all that time, is still served.
    sub.send(&[0xc0, 0]).await;
    sub.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn slow_client_queue_is_bounded() {
    let b = Broker::with(config(8, 10)).await;
    let mut slow = b.client("slow").await;
    slow.subscribe(1, &[("flood", 0)]).await;
    let payload = bytes::Bytes::from(vec![0x55; 4096]);
    // 64 MB offered to a client that never reads: the broker must drop, not buffer.
    let flood = async {
        for _ in 0..16_384 {
            b.bus
                .publish(edgegate::bus::Message {
                    topic: "flood".into(),
                    payload: payload.clone(),
                    qos: 0,
                    retain: false,
                    props: None,
                    origin: None,
                })
                .await;
        }
    };
    timeout(Duration::from_secs(30), flood).await.unwrap();
    assert!(b.bus.stats().dropped > 0);
}

#[tokio::test]
async fn shutdown_closes_everything_promptly() {
    let b = Broker::start().await;
    let mut c = b.client("c").await;
    let mut pending = Client::open(b.addr()).await; // never sends CONNECT
    b.shutdown.cancel();
    timeout(Duration::from_secs(1), b.bus.closed())
        .await
        .expect("closed() within 1 s");
    c.expect_closed().await;
    pending.expect_closed().await;
    assert!(tokio::net::TcpStream::connect(b.addr()).await.is_err());
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    let b = Broker::start().await;
    let mut cfg = config(1, 1);
    cfg.listen = b.addr();
    let err = match edgegate::bus::Bus::start(&cfg, Default::default()).await {
        Ok(_) => panic!("second bind on {} succeeded", b.addr()),
        Err(e) => e,
    };
    assert!(err.to_string().contains(&b.addr().to_string()), "{err}");
}

#[tokio::test]
async fn sys_topics_are_published_periodically_and_not_matched_by_hash() {
    let mut cfg = config(32, 100);
    cfg.sys_interval = Duration::from_millis(100);
    let b = Broker::with(cfg).await;
    let mut all = b.client("all").await;
    all.subscribe(1, &[("#", 0)]).await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("t", b"12345", 0, 0, false, false)).await;
    all.expect(b"\x30\x08\x00\x01t12345").await;

    let mut sys = b.client("sys").await;
    sys.subscribe(1, &[("$SYS/broker/#", 0)]).await;
    let want = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/messages/dropped",
        "$SYS/broker/messages/denied",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
    ];
    let mut seen = std::collections::BTreeMap::new();
    // Retained values first, then the next rounds; wait until one counted all three clients and
    // the one message. Were the broker's own $SYS publications counted as received, that count
    // would pass 1 with the first round and this would time out.
    let deadline = tokio::time::Instant::now() + WAIT;
    let is = |seen: &std::collections::BTreeMap<String, String>, k: &str, v: &str| {
        seen.get(k).is_some_and(|x| x == v)
    };
    while want.iter().any(|t| !seen.contains_key(*t))
        || !is(&seen, "$SYS/broker/clients/connected", "3")
        || !is(&seen, "$SYS/broker/messages/received", "1")
        || seen
            .get("$SYS/broker/bytes/received")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            < 9
    {
        assert!(tokio::time::Instant::now() < deadline, "got {seen:?}");
        let (topic, payload) = sys.read_publish().await;
        seen.insert(topic, String::from_utf8(payload).unwrap());
    }
    for topic in want {
        assert!(seen.contains_key(topic), "{topic} missing from {seen:?}");
    }
    assert!(seen["$SYS/broker/version"].starts_with("edgegate "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    // `#` never saw any of it: the next thing it gets is the next ordinary message.
    publ.send(&publish("u", b"1", 0, 0, false, false)).await;
    all.expect(b"\x30\x04\x00\x01u1").await;
}

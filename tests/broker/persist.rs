//! Persistent sessions, their queued and in-flight messages, and retained values survive a
//! restart of the real gateway (SIGTERM and kill -9), kept in its SQLite file; MQTT 5
//! properties with them.

use std::net::SocketAddr;
use std::time::Duration;

use edgegate::bus::codec::{self, Packet};
use edgegate::bus::MessageProps;
use tokio::io::AsyncReadExt;

use super::gw::{emulated, free_port, Gateway};
use super::support::*;

pub(super) fn ack(kind: u8, pid: u16) -> Vec<u8> {
    let mut v = vec![kind, 2];
    v.extend_from_slice(&pid.to_be_bytes());
    v
}

/// A client on `addr` with `clean` session, expecting CONNACK with `present`.
pub(super) async fn connect_as(addr: SocketAddr, id: &str, clean: bool, present: bool) -> Client {
    let mut c = open_when_listening(addr).await;
    c.send(&connect(id, clean, 0)).await;
    c.expect(&[0x20, 2, u8::from(present), 0]).await;
    c
}

/// PINGREQ answered by PINGRESP: everything sent before it was handled, and nothing else
/// was waiting for this client.
pub(super) async fn nothing_more(c: &mut Client) {
    c.send(&[0xc0, 0]).await;
    c.expect(&[0xd0, 0]).await;
}

/// Publishes through client `p`, completing the QoS 1/2 flow.
async fn publish_from(
    p: &mut Client,
    topic: &str,
    payload: &[u8],
    qos: u8,
    pid: u16,
    retain: bool,
) {
    p.send(&publish(topic, payload, qos, pid, retain, false))
        .await;
    match qos {
        1 => p.expect(&puback(pid)).await,
        2 => {
            p.expect(&ack(0x50, pid)).await;
            p.send(&ack(0x62, pid)).await;
            p.expect(&ack(0x70, pid)).await;
        }
        _ => nothing_more(p).await,
    }
}

/// Long enough for the store's next commit (commit_interval 50 ms) to have happened.
pub(super) async fn committed() {
    let wait = if emulated() { 1500 } else { 400 };
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::test]
async fn sessions_queues_in_flight_and_retained_survive_sigterm_and_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\nbuffer:\n  dir: data\n  commit_interval: 50ms\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // Two persistent sessions, offline; one clean session, online and not reading.
    let mut keeper = connect_as(addr, "keeper", false, false).await;
    keeper.subscribe(1, &[("q/#", 2)]).await;
    keeper.send(&[0xe0, 0]).await;
    keeper.expect_closed().await;
    let mut keeper2 = connect_as(addr, "keeper2", false, false).await;
    keeper2.subscribe(1, &[("q2/#", 2)]).await;
    keeper2.send(&[0xe0, 0]).await;
    keeper2.expect_closed().await;
    let mut clean = connect_as(addr, "clean", true, false).await;
    clean.subscribe(1, &[("q/#", 1)]).await;

    let mut p = connect_as(addr, "pub", true, false).await;
    publish_from(&mut p, "r/a", b"21.5", 1, 1, true).await;
    publish_from(&mut p, "r/b", b"on", 0, 0, true).await;
    publish_from(&mut p, "r/gone", b"x", 1, 2, true).await;
    publish_from(&mut p, "r/gone", b"", 1, 3, true).await; // deletes it
    publish_from(&mut p, "q/1", b"one", 1, 4, false).await;
    publish_from(&mut p, "q/2", b"two", 2, 5, false).await;
    publish_from(&mut p, "q/0", b"qos0", 0, 0, false).await; // not queued offline
    publish_from(&mut p, "q/3", b"three", 1, 6, false).await;
    drop(p);

    // 1. Graceful restart.
    let (code, _) = g.terminate();
    assert_eq!(code, Some(0), "{}", g.log());
    g.start();

    // A new subscriber gets the retained values, and nothing of the deleted one.
    let mut late = connect_as(addr, "late", true, false).await;
    late.subscribe(1, &[("r/#", 1)]).await;
    late.expect(b"\x33\x0b\x00\x03r/a\x00\x0121.5").await;
    late.expect(b"\x31\x07\x00\x03r/bon").await;
    late.send(&puback(1)).await;
    nothing_more(&mut late).await;
    // The clean session and its queue are gone.
    let mut c = connect_as(addr, "clean", false, false).await;
    nothing_more(&mut c).await;
    c.send(&[0xe0, 0]).await;

    // The persistent session is back with its queue, in order, at the published QoS.
    let mut keeper = connect_as(addr, "keeper", false, true).await;
    keeper.expect(b"\x32\x0a\x00\x03q/1\x00\x01one").await;
    keeper.expect(b"\x34\x0a\x00\x03q/2\x00\x02two").await;
    keeper.expect(b"\x32\x0c\x00\x03q/3\x00\x03three").await;
    // q/1 acknowledged, q/2 half-way (PUBREC, no PUBCOMP), q/3 not at all.
    keeper.send(&puback(1)).await;
    keeper.send(&ack(0x50, 2)).await;
    keeper.expect(&ack(0x62, 2)).await;
    nothing_more(&mut keeper).await;

    let mut p = connect_as(addr, "pub", true, false).await;
    publish_from(&mut p, "q2/4", b"four", 1, 1, false).await;
    publish_from(&mut p, "q2/5", b"five", 2, 2, false).await;
    publish_from(&mut p, "r/c", b"new", 1, 3, true).await;
    publish_from(&mut p, "r/b", b"", 0, 0, true).await; // deletes it
    drop(p);
    // It publishes at QoS 2 and has its PUBREC, but sends no PUBREL before the crash.
    keeper
        .send(&publish("q2/in", b"once", 2, 9, false, false))
        .await;
    keeper.expect(&ack(0x50, 9)).await;

    // 2. Crash, once the commit interval has passed.
    committed().await;
    g.kill9();
    drop(keeper);
    g.start();

    // The session connected at the crash: PUBREL for q/2, q/3 again with DUP, same ids.
    let mut keeper = connect_as(addr, "keeper", false, true).await;
    keeper.expect(&ack(0x62, 2)).await;
    keeper.expect(b"\x3a\x0c\x00\x03q/3\x00\x03three").await;
    keeper.send(&ack(0x70, 2)).await;
    keeper.send(&puback(3)).await;
    // Its QoS 2 publish resent: acknowledged again, not delivered again.
    keeper
        .send(&publish("q2/in", b"once", 2, 9, false, true))
        .await;
    keeper.expect(&ack(0x50, 9)).await;
    keeper.send(&ack(0x62, 9)).await;
    keeper.expect(&ack(0x70, 9)).await;
    nothing_more(&mut keeper).await;
    // The one offline at the crash: its queue, in order, q2/in once.
    let mut keeper2 = connect_as(addr, "keeper2", false, true).await;
    keeper2.expect(b"\x32\x0c\x00\x04q2/4\x00\x01four").await;
    keeper2.expect(b"\x34\x0c\x00\x04q2/5\x00\x02five").await;
    keeper2.expect(b"\x34\x0d\x00\x05q2/in\x00\x03once").await;
    keeper2.send(&puback(1)).await;
    for pid in [2, 3] {
        keeper2.send(&ack(0x50, pid)).await;
        keeper2.expect(&ack(0x62, pid)).await;
        keeper2.send(&ack(0x70, pid)).await;
    }
    nothing_more(&mut keeper2).await;
    let mut late = connect_as(addr, "late", true, false).await;
    late.subscribe(1, &[("r/#", 0)]).await;
    late.expect(b"\x31\x09\x00\x03r/a21.5").await;
    late.expect(b"\x31\x08\x00\x03r/cnew").await;
    nothing_more(&mut late).await;

    // 3. Acknowledged is gone for good: after another crash, nothing comes again.
    committed().await;
    g.kill9();
    drop((keeper, keeper2));
    g.start();
    for id in ["keeper", "keeper2"] {
        let mut k = connect_as(addr, id, false, true).await;
        nothing_more(&mut k).await;
    }
}

/// An MQTT 5 client speaking through the gateway's own codec.
pub(super) struct V5 {
    pub(super) c: Client,
}

impl V5 {
    pub(super) async fn connect(addr: SocketAddr, id: &str, present: bool) -> V5 {
        V5::connect_expiring(addr, id, u32::MAX, present).await
    }

    /// With Session Expiry Interval `expiry` seconds.
    pub(super) async fn connect_expiring(
        addr: SocketAddr,
        id: &str,
        expiry: u32,
        present: bool,
    ) -> V5 {
        V5::connect_with(addr, V5::connect_packet(id, expiry), present).await
    }

    pub(super) fn connect_packet(id: &str, expiry: u32) -> codec::Connect {
        let mut connect = codec::Connect::v311(id, false, 0);
        connect.protocol = codec::Protocol::V5;
        connect.session_expiry = expiry;
        connect
    }

    pub(super) async fn connect_with(
        addr: SocketAddr,
        connect: codec::Connect,
        present: bool,
    ) -> V5 {
        let id = connect.client_id.clone();
        let mut v = V5 {
            c: open_when_listening(addr).await,
        };
        v.send(Packet::Connect(connect)).await;
        match v.read().await {
            Packet::Connack {
                session_present,
                code: 0,
                ..
            } => assert_eq!(session_present, present, "session present for {id}"),
            other => panic!("expected CONNACK 0, got {other:?}"),
        }
        v
    }

    pub(super) async fn send(&mut self, p: Packet) {
        let mut buf = bytes::BytesMut::new();
        p.encode_as(codec::Protocol::V5, &mut buf);
        self.c.send(&buf).await;
    }

    pub(super) async fn read(&mut self) -> Packet {
        let mut buf = bytes::BytesMut::new();
        loop {
            if let Some(len) = codec::check_as(&buf, 1 << 20, codec::Protocol::V5).unwrap() {
                let frame = buf.split_to(len).freeze();
                return codec::parse_as(frame, codec::Protocol::V5).unwrap();
            }
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(WAIT, self.c.stream.read(&mut byte))
                .await
                .expect("timed out reading an MQTT 5 packet")
                .unwrap();
            assert_eq!(n, 1, "connection closed");
            buf.extend_from_slice(&byte);
        }
    }
}

#[tokio::test]
async fn mqtt5_properties_of_a_queued_message_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\nbuffer:\n  dir: data\n  commit_interval: 50ms\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let mut k = V5::connect(addr, "v5keeper", false).await;
    k.send(Packet::Subscribe {
        pid: 1,
        sub_id: None,
        filters: vec![("p/#".into(), codec::SubOptions::qos(1))],
        user: Vec::new(),
    })
    .await;
    assert!(matches!(k.read().await, Packet::Suback { pid: 1, .. }));
    k.send(Packet::DISCONNECT).await;
    k.c.expect_closed().await;

    let props = MessageProps {
        payload_format: Some(1),
        expiry: Some(3600),
        content_type: Some("text/plain".into()),
        response_topic: Some("p/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"c1")),
        user: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        ..MessageProps::default()
    };
    let mut p = V5::connect(addr, "v5pub", false).await;
    let mut publish = codec::Publish::new("p/x".into(), "hello".into(), 1, true, 7);
    publish.props = Some(std::sync::Arc::new(props.clone()));
    p.send(Packet::Publish(publish)).await;
    assert_eq!(p.read().await, Packet::Puback(7));
    drop(p);

    committed().await;
    g.kill9();
    g.start();

    let mut k = V5::connect(addr, "v5keeper", true).await;
    let Packet::Publish(got) = k.read().await else {
        panic!("expected the queued PUBLISH");
    };
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("p/x", &b"hello"[..])
    );
    assert_eq!((got.qos, got.retain, got.dup), (1, false, false));
    let got_props = got.props.expect("properties kept");
    // The expiry counts down across the restart; the rest is as published.
    let left = got_props.expiry.expect("expiry kept");
    assert!((3500..=3600).contains(&left), "{left} s left");
    assert_eq!(
        MessageProps {
            expiry: Some(3600),
            ..(*got_props).clone()
        },
        props
    );
    // The retained copy kept its properties too.
    let mut late = V5::connect(addr, "v5late", false).await;
    late.send(Packet::Subscribe {
        pid: 1,
        sub_id: None,
        filters: vec![("p/x".into(), codec::SubOptions::qos(0))],
        user: Vec::new(),
    })
    .await;
    assert!(matches!(late.read().await, Packet::Suback { pid: 1, .. }));
    let Packet::Publish(r) = late.read().await else {
        panic!("expected the retained PUBLISH");
    };
    assert!(r.retain);
    assert_eq!(
        r.props.and_then(|p| p.correlation_data.clone()),
        props.correlation_data
    );
}

#[tokio::test]
async fn mqtt5_session_expiry_keeps_counting_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\nbuffer:\n  dir: data\n  commit_interval: 50ms\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Long enough for a restart to fit inside it, even under emulation.
    let secs: u32 = if emulated() { 30 } else { 5 };

    let mut k = V5::connect_expiring(addr, "exp", secs, false).await;
    k.send(Packet::Subscribe {
        pid: 1,
        sub_id: None,
        filters: vec![("e/#".into(), codec::SubOptions::qos(1))],
        user: Vec::new(),
    })
    .await;
    assert!(matches!(k.read().await, Packet::Suback { pid: 1, .. }));
    k.send(Packet::DISCONNECT).await;
    k.c.expect_closed().await;
    let mut p = V5::connect(addr, "exppub", false).await;
    let publish = codec::Publish::new("e/1".into(), "one".into(), 1, false, 3);
    p.send(Packet::Publish(publish)).await;
    assert_eq!(p.read().await, Packet::Puback(3));
    drop(p);

    // 1. Restarted before the interval ran out: the session and its queue are there.
    committed().await;
    let (code, _) = g.terminate();
    assert_eq!(code, Some(0), "{}", g.log());
    g.start();
    let mut k = V5::connect_expiring(addr, "exp", secs, true).await;
    let Packet::Publish(got) = k.read().await else {
        panic!("expected the queued PUBLISH");
    };
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("e/1", &b"one"[..]));
    k.send(Packet::Puback(got.pid)).await;
    k.send(Packet::DISCONNECT).await;
    k.c.expect_closed().await;

    // 2. Stopped for longer than the interval: the session is gone at start, counted.
    committed().await;
    let (code, _) = g.terminate();
    assert_eq!(code, Some(0), "{}", g.log());
    tokio::time::sleep(Duration::from_secs(u64::from(secs) + 1)).await;
    g.start();
    V5::connect_expiring(addr, "exp", secs, false).await;
    let log = g.log();
    assert!(log.contains("1 sessions expired while stopped"), "{log}");
}

#[tokio::test]
async fn mqtt5_delayed_will_waiting_at_a_crash_goes_out_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\nbuffer:\n  dir: data\n  commit_interval: 50ms\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Long enough for a crash and a restart to fit before the will is due.
    let delay: u32 = if emulated() { 20 } else { 4 };

    let mut connect = V5::connect_packet("willer", 600);
    connect.will = Some(codec::Will {
        topic: "w/willer".into(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: 1,
        retain: true,
        delay,
        props: None,
    });
    let w = V5::connect_with(addr, connect, false).await;
    // The connection ends without DISCONNECT: the will waits for its delay.
    drop(w);
    let dropped = tokio::time::Instant::now();
    committed().await;
    g.kill9();
    g.start();

    let mut sub = V5::connect(addr, "watcher", false).await;
    sub.send(Packet::Subscribe {
        pid: 1,
        sub_id: None,
        filters: vec![("w/#".into(), codec::SubOptions::qos(1))],
        user: Vec::new(),
    })
    .await;
    assert!(matches!(sub.read().await, Packet::Suback { pid: 1, .. }));
    // Not out yet (nor retained) before its delay.
    sub.send(Packet::Pingreq).await;
    assert_eq!(sub.read().await, Packet::Pingresp);
    assert!(
        dropped.elapsed() < Duration::from_secs(u64::from(delay)),
        "restart too slow"
    );
    tokio::time::sleep_until(dropped + Duration::from_secs(u64::from(delay))).await;
    let Packet::Publish(got) = sub.read().await else {
        panic!("expected the will");
    };
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("w/willer", &b"gone"[..], 1)
    );
    sub.send(Packet::Puback(got.pid)).await;
    // Published once: a second restart does not send it again.
    committed().await;
    let (code, _) = g.terminate();
    assert_eq!(code, Some(0), "{}", g.log());
    g.start();
    let mut sub = V5::connect(addr, "watcher", true).await;
    sub.send(Packet::Pingreq).await;
    assert_eq!(sub.read().await, Packet::Pingresp);
}

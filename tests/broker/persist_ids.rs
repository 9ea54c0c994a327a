//! The packet id of a QoS 2 message a persistent client sent, kept across a restart so that its
//! resend is not delivered twice: on disk only once its message is, and never for a refused one.

use std::net::SocketAddr;
use std::time::Duration;

use edgegate::bus::codec::{self, Packet};

use super::gw::{emulated, free_port, Gateway};
use super::persist::{ack, connect_as, nothing_more, V5};
use super::support::*;

/// Keys of namespace `ns` in the state table, and topics of the outbox rows, as committed.
fn on_disk(g: &Gateway, ns: &str) -> (Vec<String>, Vec<String>) {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = rusqlite::Connection::open_with_flags(g.db_path(), flags).unwrap();
    let column = |sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([ns], |r| r.get(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    (
        column("SELECT key FROM state WHERE ns = ?1"),
        // The parameter is there to be ignored: the same closure reads both.
        column("SELECT topic FROM outbox WHERE ?1 IS NOT NULL ORDER BY id"),
    )
}

/// A kill -9 the moment the id of an incoming QoS 2 message is on disk finds its message in the
/// buffer: a slow on-site subscriber holds the fan-out (it waits 50 ms for each of them) before
/// the forward rules get the message, and the commits go on meanwhile.
#[tokio::test]
async fn a_qos2_packet_id_is_on_disk_only_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Nothing listens upstream: forwarded messages stay in the buffer.
    let upstream = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\n  max_inflight: 1\n  max_queued_messages: 1\nuplink:\n  host: 127.0.0.1\n  port: {upstream}\n  reconnect_min: 100ms\n  reconnect_max: 500ms\nbuffer:\n  dir: data\n  commit_interval: 10ms\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // Subscribers that never acknowledge: one message in flight, one queued, and the queue full.
    let slow_ones = if emulated() { 60 } else { 20 };
    let mut slow = Vec::new();
    for i in 0..slow_ones {
        let mut c = connect_as(addr, &format!("slow{i}"), true, false).await;
        c.subscribe(1, &[("s/g/slow/#", 1)]).await;
        slow.push(c);
    }
    let mut filler = connect_as(addr, "filler", true, false).await;
    for pid in [1, 2] {
        filler
            .send(&publish("s/g/slow/fill", b"f", 1, pid, false, false))
            .await;
        filler.expect(&puback(pid)).await;
    }

    let mut plc = connect_as(addr, "plc", false, false).await;
    plc.send(&publish("s/g/slow/alarm", b"hot", 2, 9, false, false))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let ids = loop {
        let (ids, _) = on_disk(&g, "bus.qos2in");
        if !ids.is_empty() {
            break ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the packet id never reached the disk"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    g.kill9();
    assert_eq!(ids, ["0009/plc"]);
    let (_, topics) = on_disk(&g, "bus.qos2in");
    assert!(
        topics.iter().any(|t| t == "s/g/slow/alarm"),
        "the id was committed without its message: {topics:?}"
    );
    drop((slow, filler, plc));

    // The resend after the restart is taken for the duplicate it is: one row, not two.
    g.start();
    let mut plc = connect_as(addr, "plc", false, true).await;
    plc.send(&publish("s/g/slow/alarm", b"hot", 2, 9, false, true))
        .await;
    plc.expect(&ack(0x50, 9)).await;
    plc.send(&ack(0x62, 9)).await;
    plc.expect(&ack(0x70, 9)).await;
    nothing_more(&mut plc).await;
    let (_, topics) = on_disk(&g, "bus.qos2in");
    let alarms = topics.iter().filter(|t| *t == "s/g/slow/alarm").count();
    assert_eq!(alarms, 1, "{topics:?}");
}

/// MQTT 5: a QoS 2 publish the ACL refuses (PUBREC 0x87) ends its exchange; after a restart the
/// same packet id starts a new one and is delivered.
#[tokio::test]
async fn a_refused_qos2_publish_leaves_no_packet_id_behind() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\n  auth:\n    anonymous: true\n    acl:\n      - publish: [\"open/#\"]\n        subscribe: [\"#\"]\nbuffer:\n  dir: data\n  commit_interval: 50ms\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let mut p = V5::connect(addr, "refused", false).await;
    let denied = codec::Publish::new("closed/x".into(), "no".into(), 2, false, 5);
    p.send(Packet::Publish(denied)).await;
    match p.read().await {
        Packet::Ack {
            kind: codec::AckKind::Pubrec,
            pid: 5,
            reason: 0x87,
            ..
        } => {}
        other => panic!("expected PUBREC 0x87, got {other:?}"),
    }
    let (code, _) = g.terminate();
    assert_eq!(code, Some(0), "{}", g.log());
    g.start();

    let mut sub = V5::connect(addr, "watcher", false).await;
    sub.send(Packet::Subscribe {
        pid: 1,
        sub_id: None,
        filters: vec![("open/#".into(), codec::SubOptions::qos(0))],
        user: Vec::new(),
    })
    .await;
    assert!(matches!(sub.read().await, Packet::Suback { pid: 1, .. }));
    let mut p = V5::connect(addr, "refused", true).await;
    let allowed = codec::Publish::new("open/x".into(), "yes".into(), 2, false, 5);
    p.send(Packet::Publish(allowed)).await;
    let Packet::Publish(got) = sub.read().await else {
        panic!("expected the new message");
    };
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("open/x", &b"yes"[..])
    );
}

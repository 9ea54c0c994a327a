//! MQTT 5 across a restart of the real gateway: deadlines (message expiry, session expiry) are
//! wall-clock times that count while it is stopped or crashed, and queued messages keep what the
//! subscription gave them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgegate::bus::codec::{self, Packet};
use edgegate::bus::MessageProps;
use tokio::time::Instant;

use super::gw::{emulated, free_port, Gateway};
use super::persist::V5;

fn site(port: u16) -> String {
    format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\nbuffer:\n  dir: data\n  commit_interval: 50ms\n"
    )
}

/// Seconds of a timing step: a restart under emulation takes seconds itself.
fn step() -> u64 {
    if emulated() {
        10
    } else {
        1
    }
}

async fn subscribe(c: &mut V5, filter: &str, sub_id: Option<u32>) {
    c.send(Packet::Subscribe {
        pid: 1,
        sub_id,
        filters: vec![(filter.into(), codec::SubOptions::qos(1))],
        user: Vec::new(),
    })
    .await;
    assert!(matches!(c.read().await, Packet::Suback { pid: 1, .. }));
}

/// The next packet is a PUBLISH: it, acknowledged.
async fn next_publish(c: &mut V5) -> codec::Publish {
    match c.read().await {
        Packet::Publish(p) => {
            c.send(Packet::Puback(p.pid)).await;
            p
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Nothing else is waiting for `c`.
async fn nothing_more(c: &mut V5) {
    c.send(Packet::Pingreq).await;
    assert_eq!(c.read().await, Packet::Pingresp);
}

#[tokio::test]
async fn message_expiry_counts_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut g = Gateway::new(dir.path(), &site(port));
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = step();

    let mut k = V5::connect(addr, "keeper", false).await;
    subscribe(&mut k, "m/#", None).await;
    k.send(Packet::DISCONNECT).await;
    k.c.expect_closed().await;
    // Retained, and queued for the offline keeper: one runs out while the gateway is stopped,
    // one after the restart, one lasts.
    let mut p = V5::connect(addr, "pub", false).await;
    let lives = [("m/short", s), ("m/mid", 3 * s), ("m/long", 600)];
    for (pid, (topic, secs)) in (1..).zip(lives) {
        let mut publish = codec::Publish::new(topic.into(), "x".into(), 1, true, pid);
        publish.props = Some(Arc::new(MessageProps {
            expiry: Some(secs as u32),
            ..MessageProps::default()
        }));
        p.send(Packet::Publish(publish)).await;
        assert_eq!(p.read().await, Packet::Puback(pid));
    }
    let published = Instant::now();
    drop(p);

    let (code, _) = g.terminate();
    assert_eq!(code, Some(0), "{}", g.log());
    tokio::time::sleep_until(published + Duration::from_millis(1500 * s)).await;
    g.start();
    // Past m/mid's deadline (whole seconds, so up to one more), well before m/long's.
    tokio::time::sleep_until(published + Duration::from_millis(4500 * s)).await;
    let gone = published.elapsed().as_secs();

    let mut late = V5::connect(addr, "late", false).await;
    subscribe(&mut late, "m/#", None).await;
    let mut k = V5::connect(addr, "keeper", true).await;
    for c in [&mut late, &mut k] {
        let got = next_publish(c).await;
        assert_eq!(got.topic, "m/long");
        // The seconds actually left, not the interval as restored.
        let left = got.props.and_then(|p| p.expiry).expect("expiry forwarded");
        let most = 600 - gone as u32;
        assert!(
            (most - 5..=most).contains(&left),
            "{left} s left after {gone} s"
        );
        nothing_more(c).await;
    }
}

/// A session connected when the gateway crashed ended with the crash (taken as the store's
/// last commit): its expiry interval counts the downtime.
#[tokio::test]
async fn a_session_connected_at_a_crash_expires_counting_from_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut g = Gateway::new(dir.path(), &site(port));
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = step();

    let mut brief = V5::connect_expiring(addr, "brief", 2 * s as u32, false).await;
    subscribe(&mut brief, "b/#", None).await;
    let mut lasting = V5::connect_expiring(addr, "lasting", 600, false).await;
    subscribe(&mut lasting, "l/#", None).await;
    super::persist::committed().await;
    g.kill9();
    let crashed = Instant::now();
    drop((brief, lasting));

    // Down longer than the short interval, started again well within the long one.
    tokio::time::sleep_until(crashed + Duration::from_millis(3000 * s)).await;
    g.start();
    V5::connect_expiring(addr, "brief", 2 * s as u32, false).await;
    V5::connect_expiring(addr, "lasting", 600, true).await;
    let log = g.log();
    assert!(log.contains("1 sessions expired while stopped"), "{log}");
}

/// MQTT-3.3.4-3: a queued message goes out with the subscription identifiers of the
/// subscriptions it matched, after a restart too, and so does its resend.
#[tokio::test]
async fn queued_messages_keep_their_subscription_ids_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut g = Gateway::new(dir.path(), &site(port));
    g.start();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let mut k = V5::connect(addr, "keeper", false).await;
    subscribe(&mut k, "i/#", Some(7)).await;
    subscribe(&mut k, "i/x", Some(9)).await;
    k.send(Packet::DISCONNECT).await;
    k.c.expect_closed().await;
    let mut p = V5::connect(addr, "pub", false).await;
    let publish = codec::Publish::new("i/x".into(), "x".into(), 1, false, 1);
    p.send(Packet::Publish(publish)).await;
    assert_eq!(p.read().await, Packet::Puback(1));
    drop(p);
    super::persist::committed().await;
    g.kill9();
    g.start();

    // Queued while offline; then sent and not acknowledged before the next crash.
    let mut k = V5::connect(addr, "keeper", true).await;
    let Packet::Publish(got) = k.read().await else {
        panic!("expected the queued PUBLISH");
    };
    let mut ids = got.sub_ids.clone();
    ids.sort_unstable();
    assert_eq!((got.topic.as_str(), ids), ("i/x", vec![7, 9]));
    super::persist::committed().await;
    g.kill9();
    g.start();
    let mut k = V5::connect(addr, "keeper", true).await;
    let again = next_publish(&mut k).await;
    assert!(again.dup);
    assert_eq!((again.pid, &again.sub_ids), (got.pid, &got.sub_ids));
    nothing_more(&mut k).await;
}

//! In-process `Bus::publish` / `Bus::subscribe`, against network clients and each other.

use std::time::Duration;

use bytes::Bytes;
use edgegate::bus::{BusError, Message};
use tokio::time::timeout;

use super::support::*;

fn msg(topic: &str, payload: &'static [u8], qos: u8, retain: bool) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        props: None,
        origin: None,
    }
}

fn filters(f: &[&str]) -> Vec<String> {
    f.iter().map(|s| s.to_string()).collect()
}

async fn recv(sub: &mut edgegate::bus::Subscription) -> Message {
    timeout(WAIT, sub.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

/// Asserts `fut` is still pending after a short while (it is waiting, not done).
async fn assert_waits<F: std::future::Future>(fut: &mut std::pin::Pin<&mut F>) {
    tokio::select! {
        _ = fut.as_mut() => panic!("completed, but should be waiting for queue room"),
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
}

#[tokio::test]
async fn network_publish_reaches_inproc_and_inproc_reaches_network() {
    let b = Broker::start().await;
    let mut sub = b
        .bus
        .subscribe(&filters(&["n/#", "n/+"]), 8, false)
        .unwrap();
    let mut c = b.client("c").await;
    c.send(&publish("n/1", b"from-net", 1, 4, true, false))
        .await;
    c.expect(&puback(4)).await;
    // One copy despite two matching filters; forwarded with retain 0.
    assert_eq!(recv(&mut sub).await, msg("n/1", b"from-net", 1, false));

    c.subscribe(1, &[("g/#", 1)]).await;
    b.bus.publish(msg("g/x", b"from-gw", 1, false)).await;
    c.expect(b"\x32\x0e\x00\x03g/x\x00\x01from-gw").await;
    c.send(&puback(1)).await;

    b.bus.publish(msg("n/2", b"self", 0, false)).await;
    assert_eq!(recv(&mut sub).await, msg("n/2", b"self", 0, false));
    let stats = b.bus.stats();
    assert_eq!(stats.clients_connected, 1);
    assert_eq!(stats.messages_in, 3);
    assert!(stats.messages_out >= 3 && stats.bytes_in > 0 && stats.bytes_out > 0);
}

#[tokio::test]
async fn retained_delivered_first_when_asked() {
    let b = Broker::start().await;
    b.bus.publish(msg("site/a/temp", b"20", 1, true)).await;
    b.bus.publish(msg("site/b/temp", b"21", 0, true)).await;
    b.bus.publish(msg("site/c/temp", b"x", 0, true)).await;
    b.bus.publish(msg("site/c/temp", b"", 0, true)).await; // deleted
    let mut with = b
        .bus
        .subscribe(&filters(&["site/+/temp"]), 1, true)
        .unwrap();
    let without = b.bus.subscribe(&filters(&["site/#"]), 1, false).unwrap();
    assert_eq!(recv(&mut with).await, msg("site/a/temp", b"20", 1, true));
    assert_eq!(recv(&mut with).await, msg("site/b/temp", b"21", 0, true));
    drop(without);
    b.bus.publish(msg("site/d/temp", b"22", 0, false)).await;
    assert_eq!(recv(&mut with).await, msg("site/d/temp", b"22", 0, false));
}

#[tokio::test]
async fn invalid_filter_is_an_error_naming_it() {
    let b = Broker::start().await;
    let err = match b.bus.subscribe(&filters(&["ok/#", "bad/#/x"]), 4, false) {
        Err(e) => e,
        Ok(_) => panic!("invalid filter accepted"),
    };
    assert!(matches!(err, BusError::InvalidFilter(_)));
    assert!(err.to_string().contains("bad/#/x"), "{err}");
}

#[tokio::test]
async fn full_inproc_queue_makes_publish_wait() {
    let b = Broker::start().await;
    let mut sub = b.bus.subscribe(&filters(&["bp"]), 1, false).unwrap();
    b.bus.publish(msg("bp", b"1", 0, false)).await; // fills the queue
    let second = b.bus.publish(msg("bp", b"2", 0, false));
    tokio::pin!(second);
    assert_waits(&mut second).await;
    assert_eq!(recv(&mut sub).await.payload, &b"1"[..]);
    timeout(WAIT, second)
        .await
        .expect("publish resumes once there is room");
    assert_eq!(recv(&mut sub).await.payload, &b"2"[..]);
}

#[tokio::test]
async fn network_puback_waits_for_inproc_queue_room() {
    let b = Broker::start().await;
    let mut sub = b.bus.subscribe(&filters(&["bp/#"]), 1, false).unwrap();
    let mut c = b.client("c").await;
    c.send(&publish("bp/1", b"a", 1, 1, false, false)).await;
    c.expect(&puback(1)).await;
    c.send(&publish("bp/2", b"b", 1, 2, false, false)).await;
    let ack2 = puback(2);
    let ack = c.expect(&ack2);
    tokio::pin!(ack);
    assert_waits(&mut ack).await;
    assert_eq!(recv(&mut sub).await.topic, "bp/1");
    timeout(WAIT, ack).await.unwrap();
    assert_eq!(recv(&mut sub).await.topic, "bp/2");
    // Meanwhile other network clients are never held up by it.
    let mut other = b.client("other").await;
    other.send(&[0xc0, 0]).await;
    other.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn subscription_ends_after_shutdown() {
    let b = Broker::start().await;
    let mut sub = b.bus.subscribe(&filters(&["#"]), 4, false).unwrap();
    b.shutdown.cancel();
    timeout(WAIT, b.bus.closed()).await.unwrap();
    assert_eq!(timeout(WAIT, sub.recv()).await.unwrap(), None);
}

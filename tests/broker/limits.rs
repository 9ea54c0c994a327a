//! Limits: in-flight window, packet size, per-session queue bounds and drop policy, counters.

use bytes::Bytes;
use edgegate::bus::{Message, QueueDrop};

use super::support::*;

fn msg(topic: &str, payload: &[u8], qos: u8) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain: false,
        props: None,
        origin: None,
    }
}

#[tokio::test]
async fn inflight_window_holds_messages_back_until_acknowledged() {
    let mut cfg = config(8, 100);
    cfg.max_inflight = 2;
    let b = Broker::with(cfg).await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("w", 1)]).await;
    for p in [b"1", b"2", b"3", b"4"] {
        b.bus.publish(msg("w", p, 1)).await;
    }
    sub.expect(b"\x32\x06\x00\x01w\x00\x011").await;
    sub.expect(b"\x32\x06\x00\x01w\x00\x022").await;
    // The window is full: the ping is answered, nothing else comes.
    sub.send(&[0xc0, 0]).await;
    sub.expect(&[0xd0, 0]).await;
    sub.send(&puback(2)).await;
    sub.expect(b"\x32\x06\x00\x01w\x00\x033").await;
    sub.send(&[0xc0, 0]).await;
    sub.expect(&[0xd0, 0]).await;
    sub.send(&puback(1)).await;
    sub.expect(b"\x32\x06\x00\x01w\x00\x044").await;
}

#[tokio::test]
async fn packet_size_limit_closes_and_is_counted() {
    let mut cfg = config(8, 100);
    cfg.max_packet_size = 100;
    let b = Broker::with(cfg).await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("p", 0)]).await;
    let mut c = b.client("big").await;
    // Remaining length 100 (2 + 1 topic + 97 payload): at the limit, delivered.
    let at_limit = publish("p", &[b'x'; 97], 0, 0, false, false);
    assert_eq!(at_limit[1], 100);
    c.send(&at_limit).await;
    let mut want = vec![0x30, 100, 0, 1, b'p'];
    want.extend([b'x'; 97]);
    sub.expect(&want).await;
    // One byte more: closed as soon as the header is read, before the body arrives.
    c.send(&publish("p", &[b'x'; 98], 0, 0, false, false)[..2])
        .await;
    c.expect_closed().await;
    assert_eq!(b.bus.stats().malformed, 1);
    // Connection limit refusals are counted too.
    let b = Broker::with(config(1, 10)).await;
    let _one = b.client("one").await;
    let mut two = Client::open(b.addr()).await;
    two.send(&connect("two", true, 0)).await;
    two.expect(&[0x20, 2, 0, 3]).await;
    assert_eq!(b.bus.stats().refused, 1);
}

/// A persistent session subscribed to `q` at QoS 1 that then goes offline.
async fn offline_subscriber(b: &Broker) {
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
    p.subscribe(1, &[("q", 1)]).await;
    p.send(&[0xe0, 0]).await;
    p.expect_closed().await;
}

async fn reconnect(b: &Broker) -> Client {
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    p
}

#[tokio::test]
async fn queue_drop_newest_keeps_the_oldest() {
    let mut cfg = config(8, 2);
    cfg.queue_drop = QueueDrop::Newest;
    let b = Broker::with(cfg).await;
    offline_subscriber(&b).await;
    for p in [b"1", b"2", b"3"] {
        b.bus.publish(msg("q", p, 1)).await;
    }
    assert_eq!(b.bus.stats().dropped, 1);
    let mut p = reconnect(&b).await;
    p.expect(b"\x32\x06\x00\x01q\x00\x011").await;
    p.expect(b"\x32\x06\x00\x01q\x00\x022").await;
    p.send(&[0xc0, 0]).await;
    p.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn queue_byte_bound_evicts_oldest() {
    let mut cfg = config(8, 1000);
    cfg.max_queued_bytes = 1024;
    let b = Broker::with(cfg).await;
    offline_subscriber(&b).await;
    // 1 + 500 bytes each: two fit in 1024, the third evicts the first.
    for p in [b'a', b'b', b'c'] {
        b.bus.publish(msg("q", &[p; 500], 1)).await;
    }
    assert_eq!(b.bus.stats().dropped, 1);
    let mut p = reconnect(&b).await;
    for (pid, byte) in [(1u8, b'b'), (2, b'c')] {
        let mut want = vec![0x32, 0xf9, 0x03, 0, 1, b'q', 0, pid];
        want.extend([byte; 500]);
        p.expect(&want).await;
    }
}

#[tokio::test]
async fn a_reading_subscriber_keeps_up_with_a_fast_publisher_without_drops() {
    // A queue of 10: only backpressure on the publisher keeps 5000 QoS 0 messages lossless.
    let b = Broker::with(config(8, 10)).await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("f", 0)]).await;
    let mut publ = b.client("pub").await;
    let mut burst = Vec::new();
    for n in 0..5000u32 {
        burst.extend(publish("f", n.to_string().as_bytes(), 0, 0, false, false));
    }
    let writer = tokio::spawn(async move {
        publ.send(&burst).await;
        publ
    });
    for n in 0..5000u32 {
        let (_, payload) = sub.read_publish().await;
        assert_eq!(payload, n.to_string().as_bytes());
    }
    writer.await.unwrap();
    assert_eq!(b.bus.stats().dropped, 0);
}

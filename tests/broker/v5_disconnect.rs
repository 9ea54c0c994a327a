//! MQTT 5 DISCONNECT both ways: the server says why before it closes a v5 client (malformed,
//! protocol error, keepalive, takeover, shutdown, packet too large, receive maximum, topic
//! alias), and the client's reason decides about its will.

use super::support::*;
use super::v5::*;

/// DISCONNECT with a reason code and a reason string.
fn disconnect(code: u8, why: &str) -> Vec<u8> {
    let mut body = vec![code];
    body.extend(props(&prop_str(0x1f, why)));
    packet(0xe0, &body)
}

#[tokio::test]
async fn v5_malformed_and_protocol_errors_get_their_reason_code() {
    let b = Broker::start().await;
    let mut watch = client5(&b, "watch").await;
    watch.send(&subscribe5(1, &[], &[("live", 0)])).await;
    watch.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    // Invalid UTF-8 in a topic name: malformed, 0x81.
    let mut c = client5(&b, "a").await;
    c.send(&[0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, 0x00]).await;
    c.expect(&disconnect(0x81, "malformed packet: invalid UTF-8"))
        .await;
    c.expect_closed().await;
    // Two payload format indicators: protocol error, 0x82.
    let mut c = client5(&b, "b").await;
    c.send(&publish5("t", 0, 0, false, &[0x01, 0, 0x01, 1], b"x"))
        .await;
    c.expect(&disconnect(
        0x82,
        "protocol error: duplicate payload format indicator",
    ))
    .await;
    c.expect_closed().await;
    // Without problem information: the short form.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("c", 0x02, 0, &[0x17, 0], &[])).await;
    c.expect(&CONNACK_OK).await;
    c.send(&subscribe5(1, &[], &[("a", 0x40)])).await;
    c.expect(&[0xe0, 1, 0x81]).await;
    c.expect_closed().await;
    // A subscription identifier in a PUBLISH from a client is a protocol error.
    let mut c = client5(&b, "d").await;
    c.send(&publish5("t", 0, 0, false, &[0x0b, 5], b"x")).await;
    c.expect(&disconnect(
        0x82,
        "subscription identifier in a PUBLISH from a client",
    ))
    .await;
    c.expect_closed().await;
    // A too-large packet: 0x95.
    let mut c = client5(&b, "e").await;
    c.send(&[0x30, 0xf0, 0xa2, 0x04]).await; // remaining length 70000
    c.expect(&disconnect(
        0x95,
        "packet of 70000 bytes exceeds the limit of 65536",
    ))
    .await;
    c.expect_closed().await;
    // And the broker keeps serving: the connection open all along still receives.
    let mut c = client5(&b, "f").await;
    c.send(&publish5("live", 0, 0, false, &[], b"still")).await;
    watch
        .expect(&publish5("live", 0, 0, false, &[], b"still"))
        .await;
}

#[tokio::test]
async fn v5_keepalive_takeover_and_shutdown_are_announced() {
    let b = Broker::start().await;
    // Keepalive 1 s: closed after 1.5 s of silence with 0x8D.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("k", 0x02, 1, &[], &[])).await;
    c.expect(&CONNACK_OK).await;
    c.expect(&disconnect(0x8d, "keep alive timeout")).await;
    c.expect_closed().await;
    // Takeover: the old connection hears 0x8E.
    let mut old = client5(&b, "same").await;
    let _new = client5(&b, "same").await;
    old.expect(&disconnect(0x8e, "session taken over")).await;
    old.expect_closed().await;
    // A 3.1.1 client taken over is just closed.
    let mut old = b.client("same311").await;
    let _new = b.client("same311").await;
    old.expect_closed().await;
    // Shutdown: 0x8B.
    let mut c = client5(&b, "s").await;
    b.shutdown.cancel();
    c.expect(&disconnect(0x8b, "server shutting down")).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn v5_receive_maximum_and_topic_alias_limits() {
    let mut cfg = config(32, 100);
    cfg.receive_maximum = 2;
    cfg.topic_alias_max = 3;
    let b = Broker::with(cfg).await;
    let connack = [0x20, 14, 0, 0, 11, 0x21, 0, 2, 0x22, 0, 3, 0x27, 0, 1, 0, 0];
    // QoS 1 one at a time, each PUBACK awaited: never more than one outstanding.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("q1", 0x02, 0, &[], &[])).await;
    c.expect(&connack).await;
    for pid in 1..=5u16 {
        c.send(&publish5("t", 1, pid, false, &[], b"x")).await;
        let mut ack = vec![0x40, 3];
        ack.extend(pid.to_be_bytes());
        ack.push(0x10); // no matching subscribers
        c.expect(&ack).await;
    }
    // QoS 2 without PUBREL: the third open one exceeds Receive Maximum 2.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("q2", 0x02, 0, &[0x17, 0], &[])).await;
    c.expect(&connack).await;
    let mut burst = Vec::new();
    for pid in 1..=3u16 {
        burst.extend(publish5("t", 2, pid, false, &[], b"x"));
    }
    c.send(&burst).await;
    c.expect(&[0x50, 3, 0, 1, 0x10, 0x50, 3, 0, 2, 0x10]).await;
    c.expect(&[0xe0, 1, 0x93]).await;
    c.expect_closed().await;
    // Topic alias 4 with our maximum 3: 0x94.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("al", 0x02, 0, &[], &[])).await;
    c.expect(&connack).await;
    c.send(&publish5("t", 0, 0, false, &[0x23, 0, 4], b"x"))
        .await;
    c.expect(&disconnect(0x94, "topic alias 4 beyond the maximum of 3"))
        .await;
    c.expect_closed().await;
    // An alias that was never set: protocol error.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("al2", 0x02, 0, &[], &[])).await;
    c.expect(&connack).await;
    c.send(&publish5("", 0, 0, false, &[0x23, 0, 2], b"x"))
        .await;
    c.expect(&disconnect(0x82, "topic alias 2 was never set"))
        .await;
    c.expect_closed().await;
}

#[tokio::test]
async fn v5_client_disconnect_reason_decides_the_will() {
    let b = Broker::start().await;
    let mut watcher = b.client("watcher").await;
    watcher.subscribe(1, &[("will/#", 0)]).await;
    // Will: no properties, topic, payload.
    let will = |topic: &str| {
        let mut t = props(&[]);
        t.extend(field(topic.as_bytes()));
        t.extend(field(b"gone"));
        t
    };
    // Normal disconnection (0x00): the will is discarded.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("w1", 0x06, 0, &[], &will("will/1"))).await;
    c.expect(&CONNACK_OK).await;
    c.send(&[0xe0, 1, 0x00]).await;
    c.expect_closed().await;
    // 0x04, disconnect with will message: published.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("w2", 0x06, 0, &[], &will("will/2"))).await;
    c.expect(&CONNACK_OK).await;
    c.send(&[0xe0, 1, 0x04]).await;
    c.expect_closed().await;
    assert_eq!(
        watcher.read_publish().await,
        ("will/2".to_string(), b"gone".to_vec())
    );
    // A client-side error (0x80 unspecified) publishes it too.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("w4", 0x06, 0, &[], &will("will/4"))).await;
    c.expect(&CONNACK_OK).await;
    c.send(&[0xe0, 1, 0x80]).await;
    c.expect_closed().await;
    assert_eq!(
        watcher.read_publish().await,
        ("will/4".to_string(), b"gone".to_vec())
    );
    // Session expiry 0 at CONNECT cannot be raised by DISCONNECT: protocol error.
    let mut c = client5(&b, "w3").await;
    c.send(&[0xe0, 7, 0x00, 5, 0x11, 0, 0, 0, 9]).await;
    c.expect(&disconnect(
        0x82,
        "session expiry set by DISCONNECT after 0 at CONNECT",
    ))
    .await;
    c.expect_closed().await;
    // Nothing else reached the watcher (w1's will was discarded).
    watcher.send(&[0xc0, 0]).await;
    watcher.expect(&[0xd0, 0]).await;
}

/// A client still sending when the server disconnects it (here: past Receive Maximum) reads
/// the DISCONNECT and then the end of the stream: the server half-closes and reads what is
/// still coming for a while, instead of a close that resets the connection under the
/// client's writes.
#[tokio::test]
async fn v5_client_still_sending_reads_the_disconnect_reason() {
    use tokio::io::AsyncWriteExt;
    let mut cfg = config(32, 100);
    cfg.receive_maximum = 1;
    let b = Broker::with(cfg).await;
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("flood", 0x02, 0, &[0x17, 0], &[])).await;
    c.expect(&[
        0x20, 14, 0, 0, 11, 0x21, 0, 1, 0x22, 0, 16, 0x27, 0, 1, 0, 0,
    ])
    .await;
    // Two QoS 2 exchanges open: the second is one too many.
    let mut burst = publish5("t", 2, 1, false, &[], b"x");
    burst.extend(publish5("t", 2, 2, false, &[], b"x"));
    c.send(&burst).await;
    // The client goes on writing (PINGREQs) for a while, as a publishing client would before it
    // gets to read; every write must still succeed.
    let pings = [0xc0, 0].repeat(2048);
    for i in 0..30 {
        if let Err(e) = c.stream.write_all(&pings).await {
            panic!("write {i} failed: {e}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    c.expect(&[0x50, 3, 0, 1, 0x10, 0xe0, 1, 0x93]).await;
    c.expect_closed().await;
}

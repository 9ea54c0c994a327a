//! MQTT 5 flow control toward and from a client: topic aliases both ways, the client's Receive
//! Maximum as our in-flight window, the client's Maximum Packet Size.

use super::support::*;
use super::v5::*;

#[tokio::test]
async fn v5_inbound_topic_aliases_resolve_to_their_topic() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("a/#", 0)]).await;
    let mut p = client5(&b, "pub").await;
    p.send(&publish5("a/long/topic", 0, 0, false, &[0x23, 0, 1], b"1"))
        .await;
    p.send(&publish5("", 0, 0, false, &[0x23, 0, 1], b"2"))
        .await;
    // Alias 1 now stands for another topic.
    p.send(&publish5("a/other", 0, 0, false, &[0x23, 0, 1], b"3"))
        .await;
    p.send(&publish5("", 0, 0, false, &[0x23, 0, 1], b"4"))
        .await;
    for (topic, payload) in [
        ("a/long/topic", "1"),
        ("a/long/topic", "2"),
        ("a/other", "3"),
        ("a/other", "4"),
    ] {
        // The 3.1.1 subscriber sees plain topics.
        sub.expect(&publish(topic, payload.as_bytes(), 0, 0, false, false))
            .await;
    }
}

#[tokio::test]
async fn v5_outbound_topic_aliases_up_to_the_clients_maximum() {
    let b = Broker::start().await;
    let mut sub = Client::open(b.addr()).await;
    // Topic Alias Maximum 1 toward this client.
    sub.send(&connect5("sub", 0x02, 0, &[0x22, 0, 1], &[]))
        .await;
    sub.expect(&CONNACK_OK).await;
    sub.send(&subscribe5(1, &[], &[("x/#", 0)])).await;
    sub.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    let mut p = b.client("pub").await;
    p.send(&publish("x/1", b"p1", 0, 0, false, false)).await;
    p.send(&publish("x/1", b"p2", 0, 0, false, false)).await;
    p.send(&publish("x/2", b"p3", 0, 0, false, false)).await;
    p.send(&publish("x/1", b"p4", 0, 0, false, false)).await;
    // First use: topic and alias 1.
    sub.expect(&[0x30, 11, 0, 3, b'x', b'/', b'1', 3, 0x23, 0, 1, b'p', b'1'])
        .await;
    // Then the alias alone, with an empty topic.
    sub.expect(&[0x30, 8, 0, 0, 3, 0x23, 0, 1, b'p', b'2'])
        .await;
    // No alias left for x/2: the full topic without one.
    sub.expect(&[0x30, 8, 0, 3, b'x', b'/', b'2', 0, b'p', b'3'])
        .await;
    sub.expect(&[0x30, 8, 0, 0, 3, 0x23, 0, 1, b'p', b'4'])
        .await;
}

#[tokio::test]
async fn v5_clients_receive_maximum_bounds_what_we_send_unacknowledged() {
    let b = Broker::start().await;
    let mut sub = Client::open(b.addr()).await;
    sub.send(&connect5("sub", 0x02, 0, &[0x21, 0, 1], &[]))
        .await;
    sub.expect(&CONNACK_OK).await;
    sub.send(&subscribe5(1, &[], &[("r", 1)])).await;
    sub.expect(&[0x90, 4, 0, 1, 0, 1]).await;
    let mut p = b.client("pub").await;
    for pid in 1..=3u16 {
        p.send(&publish("r", &[b'0' + pid as u8], 1, pid, false, false))
            .await;
        p.expect(&puback(pid)).await;
    }
    // Only one unacknowledged PUBLISH at a time: the PINGRESP overtakes the second.
    sub.expect(&[0x32, 7, 0, 1, b'r', 0, 1, 0, b'1']).await;
    sub.send(&[0xc0, 0]).await;
    sub.expect(&[0xd0, 0]).await;
    sub.send(&puback(1)).await;
    sub.expect(&[0x32, 7, 0, 1, b'r', 0, 2, 0, b'2']).await;
    sub.send(&[0xc0, 0]).await;
    sub.expect(&[0xd0, 0]).await;
    sub.send(&puback(2)).await;
    sub.expect(&[0x32, 7, 0, 1, b'r', 0, 3, 0, b'3']).await;
}

#[tokio::test]
async fn v5_clients_maximum_packet_size_is_never_exceeded() {
    let b = Broker::start().await;
    let mut sub = Client::open(b.addr()).await;
    // Maximum Packet Size 20 bytes, whole packet.
    sub.send(&connect5("sub", 0x02, 0, &[0x27, 0, 0, 0, 20], &[]))
        .await;
    sub.expect(&CONNACK_OK).await;
    sub.send(&subscribe5(1, &[], &[("m", 1)])).await;
    sub.expect(&[0x90, 4, 0, 1, 0, 1]).await;
    let mut p = b.client("pub").await;
    let dropped = b.bus.stats().dropped;
    // 20 bytes: fits. 21 bytes: dropped and counted, without using up a packet id.
    p.send(&publish("m", &[b'a'; 12], 1, 1, false, false)).await;
    p.expect(&puback(1)).await;
    p.send(&publish("m", &[b'b'; 13], 1, 2, false, false)).await;
    p.expect(&puback(2)).await;
    p.send(&publish("m", b"c", 1, 3, false, false)).await;
    p.expect(&puback(3)).await;
    let mut first = vec![0x32, 18, 0, 1, b'm', 0, 1, 0];
    first.extend([b'a'; 12]);
    sub.expect(&first).await;
    sub.send(&puback(1)).await;
    sub.expect(&[0x32, 7, 0, 1, b'm', 0, 2, 0, b'c']).await;
    wait_for_stat(&b, |s| s.dropped == dropped + 1).await;
    // A DISCONNECT too long for the client loses its reason string, not its reason code.
    sub.send(&[0xa2, 3, 0, 2, 0]).await; // UNSUBSCRIBE without filters: malformed
    sub.expect(&[0xe0, 1, 0x81]).await;
    sub.expect_closed().await;
}

#[tokio::test]
async fn v5_pubrec_failure_ends_the_qos2_exchange() {
    let b = Broker::start().await;
    let mut sub = Client::open(b.addr()).await;
    sub.send(&connect5("sub", 0x02, 0, &[0x21, 0, 1], &[]))
        .await;
    sub.expect(&CONNACK_OK).await;
    sub.send(&subscribe5(1, &[], &[("q", 2)])).await;
    sub.expect(&[0x90, 4, 0, 1, 0, 2]).await;
    let mut p = b.client("pub").await;
    for pid in 1..=2u16 {
        let [hi, lo] = pid.to_be_bytes();
        p.send(&publish("q", &[b'0' + pid as u8], 2, pid, false, false))
            .await;
        p.expect(&[0x50, 2, hi, lo]).await;
        p.send(&[0x62, 2, hi, lo]).await;
        p.expect(&[0x70, 2, hi, lo]).await;
    }
    sub.expect(&[0x34, 7, 0, 1, b'q', 0, 1, 0, b'1']).await;
    // PUBREC 0x80 (unspecified error): no PUBREL follows, and the window is free again.
    sub.send(&[0x50, 3, 0, 1, 0x80]).await;
    sub.expect(&[0x34, 7, 0, 1, b'q', 0, 2, 0, b'2']).await;
    // A successful PUBREC gets its PUBREL.
    sub.send(&[0x50, 2, 0, 2]).await;
    sub.expect(&[0x62, 2, 0, 2]).await;
}

/// MQTT-3.1.2-24: CONNACK too is within the client's Maximum Packet Size; a refusal that would
/// not fit loses its reason string, not its reason code. Also for a CONNECT that could not be
/// decoded once its Maximum Packet Size was read.
#[tokio::test]
async fn v5_connack_fits_the_clients_maximum_packet_size() {
    let mut cfg = config(32, 100);
    cfg.auth.anonymous = false;
    let b = Broker::with(cfg).await;
    let small = [0x27, 0, 0, 0, 10];
    // Not authorized (anonymous): 0x87, whose reason string would make 21 bytes.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &small, &[])).await;
    c.expect(&[0x20, 3, 0, 0x87, 0]).await;
    c.expect_closed().await;
    // Unsupported authentication method: 0x8C.
    let mut p = small.to_vec();
    p.extend(prop_str(0x15, "SCRAM-SHA-1"));
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &p, &[])).await;
    c.expect(&[0x20, 3, 0, 0x8c, 0]).await;
    c.expect_closed().await;
    // Receive Maximum 0 after the Maximum Packet Size: 0x82.
    let mut p = small.to_vec();
    p.extend([0x21, 0, 0]);
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &p, &[])).await;
    c.expect(&[0x20, 3, 0, 0x82, 0]).await;
    c.expect_closed().await;
}

//! QoS 1 and 2 in both directions, overlapping subscriptions, and in-order QoS 2 resumption.

use tokio::io::AsyncReadExt;

use super::support::*;

#[tokio::test]
async fn qos1_both_directions_and_qos2_in() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("q/#", 1)]).await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("q/1", b"a", 1, 0x0a, false, false))
        .await;
    publ.expect(&[0x40, 0x02, 0x00, 0x0a]).await;
    sub.expect(b"\x32\x08\x00\x03q/1\x00\x01a").await;
    sub.send(&puback(1)).await;

    // QoS 2 in: PUBREC, a DUP resend is not delivered twice, PUBREL -> PUBCOMP.
    publ.send(&publish("q/2", b"b", 2, 7, false, false)).await;
    publ.expect(&[0x50, 2, 0, 7]).await;
    publ.send(&publish("q/2", b"b", 2, 7, false, true)).await;
    publ.expect(&[0x50, 2, 0, 7]).await;
    publ.send(&[0x62, 2, 0, 7]).await;
    publ.expect(&[0x70, 2, 0, 7]).await;
    publ.send(&publish("q/3", b"c", 0, 0, false, false)).await;
    // Downgraded to the granted QoS 1.
    sub.expect(b"\x32\x08\x00\x03q/2\x00\x02b").await;
    sub.expect(b"\x30\x06\x00\x03q/3c").await;
    // PUBREL with flags 0000 closes.
    publ.send(&[0x60, 2, 0, 7]).await;
    publ.expect_closed().await;
}

#[tokio::test]
async fn qos2_out_and_overlap_at_max_granted_qos() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("x/#", 0), ("x/+", 2), ("x/y", 1)])
        .await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("x/y", b"v", 2, 3, false, false)).await;
    publ.expect(&[0x50, 2, 0, 3]).await;
    publ.send(&[0x62, 2, 0, 3]).await;
    publ.expect(&[0x70, 2, 0, 3]).await;
    // One copy, at QoS 2: PUBLISH, PUBREC -> PUBREL, PUBCOMP.
    sub.expect(b"\x34\x08\x00\x03x/y\x00\x01v").await;
    sub.send(&[0x50, 2, 0, 1]).await;
    sub.expect(&[0x62, 2, 0, 1]).await;
    sub.send(&[0x70, 2, 0, 1]).await;
    // A QoS 1 message through the same subscriptions arrives once, at QoS 1.
    publ.send(&publish("x/y", b"w", 1, 4, false, false)).await;
    publ.expect(&puback(4)).await;
    sub.expect(b"\x32\x08\x00\x03x/y\x00\x02w").await;
    sub.send(&puback(2)).await;
    sub.send(&[0xc0, 0]).await;
    sub.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn qos2_out_resumes_in_order_after_reconnect() {
    let b = Broker::start().await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("q2", false, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
    p.subscribe(1, &[("z/#", 2)]).await;
    for (n, payload) in [(1u8, b"1"), (2, b"2"), (3, b"3")] {
        b.bus
            .publish(edgegate::bus::Message {
                topic: format!("z/{n}"),
                payload: bytes::Bytes::copy_from_slice(payload),
                qos: 2,
                retain: false,
                props: None,
                origin: None,
            })
            .await;
    }
    p.expect(b"\x34\x08\x00\x03z/1\x00\x011").await;
    p.expect(b"\x34\x08\x00\x03z/2\x00\x022").await;
    p.expect(b"\x34\x08\x00\x03z/3\x00\x033").await;
    // z/1: PUBREC -> PUBREL, then the connection drops before PUBCOMP; z/2, z/3 unanswered.
    p.send(&[0x50, 2, 0, 1]).await;
    p.expect(&[0x62, 2, 0, 1]).await;
    drop(p);

    let mut p = Client::open(b.addr()).await;
    p.send(&connect("q2", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    // Original order and packet ids: PUBREL for 1, PUBLISH DUP for 2 and 3.
    p.expect(&[0x62, 2, 0, 1]).await;
    p.expect(b"\x3c\x08\x00\x03z/2\x00\x022").await;
    p.expect(b"\x3c\x08\x00\x03z/3\x00\x033").await;
    p.send(&[0x70, 2, 0, 1]).await;
    p.send(&[0x50, 2, 0, 2]).await;
    p.expect(&[0x62, 2, 0, 2]).await;
    p.send(&[0x70, 2, 0, 2]).await;
    p.send(&[0x50, 2, 0, 3]).await;
    p.expect(&[0x62, 2, 0, 3]).await;
    p.send(&[0x70, 2, 0, 3]).await;
    drop(p);
    // Completed: nothing is resent on the next connection.
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("q2", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    p.send(&[0xc0, 0]).await;
    p.expect(&[0xd0, 0]).await;
}

/// A PUBREC names a QoS 2 exchange: one for a QoS 1 message is a protocol violation, never
/// answered with PUBREL (3.1.1: close; MQTT 5: DISCONNECT 0x82).
#[tokio::test]
async fn pubrec_for_a_qos1_message_is_a_protocol_error() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("q", 1)]).await;
    let mut sub5 = Client::open(b.addr()).await;
    // MQTT 5, no problem information: DISCONNECT without reason string.
    let mut body = field(b"MQTT");
    body.extend([5, 0x02, 0, 0, 2, 0x17, 0]);
    body.extend(field(b"sub5"));
    sub5.send(&packet(0x10, &body)).await;
    let mut connack = [0u8; 16];
    sub5.stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[..4], [0x20, 14, 0, 0], "{connack:02x?}");
    sub5.send(&[0x82, 7, 0, 1, 0, 0, 1, b'q', 1]).await;
    sub5.expect(&[0x90, 4, 0, 1, 0, 1]).await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("q", b"a", 1, 1, false, false)).await;
    publ.expect(&puback(1)).await;
    sub.expect(b"\x32\x06\x00\x01q\x00\x01a").await;
    sub5.expect(&[0x32, 7, 0, 1, b'q', 0, 1, 0, b'a']).await;
    sub.send(&[0x50, 2, 0, 1]).await;
    sub.expect_closed().await;
    sub5.send(&[0x50, 2, 0, 1]).await;
    sub5.expect(&[0xe0, 1, 0x82]).await;
    sub5.expect_closed().await;
}

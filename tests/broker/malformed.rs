//! Malformed packet streams: each closes its own connection (and is counted) while another
//! client keeps receiving a steady stream without a gap.

use std::time::Duration;

use bytes::Bytes;
use edgegate::bus::Message;
use tokio::io::AsyncWriteExt;

use super::support::*;

/// (what, bytes sent after a valid CONNECT; `None`: instead of CONNECT).
fn after_connect() -> Vec<(&'static str, Vec<u8>)> {
    let mut big = vec![0x30, 0xff, 0xff, 0x7f];
    big.extend([0u8; 16]);
    vec![
        (
            "5-byte remaining length",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("packet type 0", vec![0x00, 0x00]),
        ("packet type 15", vec![0xf0, 0x00]),
        ("bad UTF-8 topic", vec![0x30, 0x04, 0x00, 0x02, 0xc3, 0x28]),
        (
            "UTF-16 surrogate in topic",
            vec![0x30, 0x05, 0x00, 0x03, 0xed, 0xa0, 0x80],
        ),
        (
            "U+0000 in topic",
            vec![0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'],
        ),
        (
            "PUBLISH QoS 3",
            vec![0x36, 0x05, 0x00, 0x01, b'm', 0x00, 0x01],
        ),
        ("DUP on QoS 0", vec![0x38, 0x04, 0x00, 0x01, b'm', b'x']),
        (
            "packet id 0",
            vec![0x32, 0x05, 0x00, 0x01, b'm', 0x00, 0x00],
        ),
        (
            "string longer than the packet",
            vec![0x30, 0x05, 0x00, 0x09, b'm', 0x00, 0x01],
        ),
        ("PUBREL reserved bits 0000", vec![0x60, 0x02, 0x00, 0x01]),
        ("PUBACK reserved bits 0010", vec![0x42, 0x02, 0x00, 0x01]),
        (
            "SUBSCRIBE reserved bits 0000",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'm', 0x00],
        ),
        (
            "SUBSCRIBE options reserved bits",
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'm', 0x04],
        ),
        (
            "UNSUBSCRIBE reserved bits 0000",
            vec![0xa0, 0x05, 0x00, 0x01, 0x00, 0x01, b'm'],
        ),
        ("PINGREQ reserved bit", vec![0xc1, 0x00]),
        ("PINGREQ with a body", vec![0xc0, 0x01, 0x00]),
        ("DISCONNECT reserved bit", vec![0xe1, 0x00]),
        ("CONNACK from a client", vec![0x20, 0x02, 0x00, 0x00]),
        ("larger than max_packet_size", big),
    ]
}

fn instead_of_connect() -> Vec<(&'static str, Vec<u8>)> {
    let mut bad_id = field(b"MQTT");
    bad_id.extend([4, 0x02, 0, 0]);
    bad_id.extend([0x00, 0x02, 0xff, 0xfe]);
    let mut reserved = field(b"MQTT");
    reserved.extend([4, 0x03, 0, 0]);
    reserved.extend(field(b"x"));
    let mut will_qos3 = field(b"MQTT");
    will_qos3.extend([4, 0x1e, 0, 0]);
    will_qos3.extend(field(b"x"));
    will_qos3.extend(field(b"w"));
    will_qos3.extend(field(b"p"));
    vec![
        ("CONNECT with a bad UTF-8 client id", packet(0x10, &bad_id)),
        ("CONNECT reserved flag", packet(0x10, &reserved)),
        ("CONNECT will QoS 3", packet(0x10, &will_qos3)),
        ("CONNECT with reserved header bits", {
            let mut p = connect("x", true, 0);
            p[0] = 0x11;
            p
        }),
        ("protocol name MQTX", {
            let mut p = connect("x", true, 0);
            p[5] = b'X';
            p
        }),
    ]
}

#[tokio::test]
async fn malformed_streams_close_only_their_connection_while_another_keeps_receiving() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("m", 0)]).await;

    // A steady stream to the good subscriber while the bad ones come and go.
    let bus = b.bus.clone();
    let stream = tokio::spawn(async move {
        for n in 0u32..200 {
            bus.publish(Message {
                topic: "m".into(),
                payload: Bytes::from(n.to_string()),
                qos: 0,
                retain: false,
                props: None,
                origin: None,
            })
            .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 200 {
            let (topic, payload) = sub.read_publish().await;
            assert_eq!(topic, "m");
            got.push(String::from_utf8(payload).unwrap().parse::<u32>().unwrap());
        }
        got
    });

    let mut expected = 0;
    for (what, bytes) in after_connect() {
        let mut c = b.client("bad").await;
        c.send(&bytes).await;
        c.expect_closed().await;
        expected += 1;
        assert_eq!(b.bus.stats().malformed, expected, "{what}");
    }
    for (what, bytes) in instead_of_connect() {
        let mut c = Client::open(b.addr()).await;
        c.send(&bytes).await;
        c.expect_closed().await;
        expected += 1;
        assert_eq!(b.bus.stats().malformed, expected, "{what}");
    }
    // Truncated: the remaining length (or the body it announces) never completes.
    for bytes in [&[0x30, 0x80][..], &[0x30, 0x0a, 0x00, 0x01, b'm'][..]] {
        let mut c = b.client("cut").await;
        c.send(bytes).await;
        c.stream.shutdown().await.unwrap();
        c.expect_closed().await;
    }

    stream.await.unwrap();
    let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    assert_eq!(b.bus.stats().dropped, 0);
}

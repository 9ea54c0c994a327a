//! MQTT 5 over raw sockets: helpers for hand-built v5 packets, and CONNECT/CONNACK (assigned
//! client id, refusals with reason codes and strings, announced limits, Server Keep Alive).

use std::collections::HashMap;

use edgegate::bus::auth::{AuthConfig, PasswordHash};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

use super::support::*;

/// CONNACK 0 for the test config: Receive Maximum 64, Topic Alias Maximum 16, Maximum Packet
/// Size 65536.
pub const CONNACK_OK: [u8; 16] = [
    0x20, 14, 0, 0, 11, 0x21, 0, 64, 0x22, 0, 16, 0x27, 0, 1, 0, 0,
];

/// A variable byte integer.
pub fn vbi(mut v: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return out;
        }
    }
}

/// Property length, then the properties.
pub fn props(p: &[u8]) -> Vec<u8> {
    let mut v = vbi(p.len());
    v.extend_from_slice(p);
    v
}

/// A string property.
pub fn prop_str(id: u8, s: &str) -> Vec<u8> {
    let mut v = vec![id];
    v.extend(field(s.as_bytes()));
    v
}

/// A v5 CONNECT: `flags` (0x02 clean start), keepalive, CONNECT properties, then client id and
/// whatever `tail` holds (will properties/topic/payload, user name, password).
pub fn connect5(id: &str, flags: u8, keep_alive: u16, p: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.extend([5, flags]);
    body.extend(keep_alive.to_be_bytes());
    body.extend(props(p));
    body.extend(field(id.as_bytes()));
    body.extend_from_slice(tail);
    packet(0x10, &body)
}

/// A v5 PUBLISH with these properties.
pub fn publish5(topic: &str, qos: u8, pid: u16, retain: bool, p: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic.as_bytes());
    if qos > 0 {
        body.extend(pid.to_be_bytes());
    }
    body.extend(props(p));
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// A v5 SUBSCRIBE: properties, then filters with their option bytes.
pub fn subscribe5(pid: u16, p: &[u8], filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend(props(p));
    for (f, o) in filters {
        body.extend(field(f.as_bytes()));
        body.push(*o);
    }
    packet(0x82, &body)
}

/// Reads one whole packet, fixed header included.
pub async fn read_packet(c: &mut Client) -> Vec<u8> {
    let mut out = vec![0u8; 1];
    let read = async {
        c.stream.read_exact(&mut out[..1]).await?;
        let mut len = 0usize;
        for i in 0..4 {
            let b = c.stream.read_u8().await?;
            out.push(b);
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        let start = out.len();
        out.resize(start + len, 0);
        c.stream.read_exact(&mut out[start..]).await?;
        std::io::Result::Ok(())
    };
    timeout(WAIT, read)
        .await
        .expect("timed out reading a packet")
        .expect("read failed");
    out
}

/// A v5 client that connected (clean start, keepalive 0) and got [`CONNACK_OK`].
pub async fn client5(b: &Broker, id: &str) -> Client {
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5(id, 0x02, 0, &[], &[])).await;
    c.expect(&CONNACK_OK).await;
    c
}

fn connack_refused(code: u8, reason: Option<&str>) -> Vec<u8> {
    let p = reason.map(|r| prop_str(0x1f, r)).unwrap_or_default();
    let mut body = vec![0, code];
    body.extend(props(&p));
    packet(0x20, &body)
}

#[tokio::test]
async fn v5_connack_announces_the_brokers_limits() {
    let b = Broker::start().await;
    let mut c = client5(&b, "v5").await;
    c.send(&[0xc0, 0]).await;
    c.expect(&[0xd0, 0]).await;
    // A 3.1.1 client still gets the 3.1.1 CONNACK.
    let _old = b.client("old").await;
    // A clean start 0 client with a session expiry: same CONNACK (no session yet).
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("keep", 0, 30, &[0x11, 0, 0, 0, 60], &[]))
        .await;
    c.expect(&CONNACK_OK).await;
}

#[tokio::test]
async fn v5_empty_client_id_gets_an_assigned_one() {
    let b = Broker::start().await;
    let mut c = Client::open(b.addr()).await;
    // Clean start 0 and no id: refused in 3.1.1, assigned in MQTT 5.
    c.send(&connect5("", 0, 0, &[], &[])).await;
    let ack = read_packet(&mut c).await;
    assert_eq!(&ack[..3], [0x20, ack.len() as u8 - 2, 0], "{ack:02x?}");
    assert_eq!(ack[3], 0, "accepted: {ack:02x?}");
    assert_eq!(ack[5], 0x12, "first property: assigned client identifier");
    let n = usize::from(u16::from_be_bytes([ack[6], ack[7]]));
    let id = std::str::from_utf8(&ack[8..8 + n]).unwrap().to_string();
    assert!(id.starts_with("edgegate-"), "{id}");
    assert_eq!(
        &ack[8 + n..],
        [0x21, 0, 64, 0x22, 0, 16, 0x27, 0, 1, 0, 0],
        "{ack:02x?}"
    );
    // The assigned id is the session's: subscribing under it works, and a second client
    // gets a different one.
    c.send(&subscribe5(1, &[], &[("t", 0)])).await;
    c.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    let mut d = Client::open(b.addr()).await;
    d.send(&connect5("", 0x02, 0, &[], &[])).await;
    let ack2 = read_packet(&mut d).await;
    assert_ne!(ack, ack2);
}

#[tokio::test]
async fn v5_refusals_carry_reason_codes_and_strings() {
    let mut users = HashMap::new();
    let line = PasswordHash::new("s3cret", 1000).unwrap().to_line();
    users.insert("plc".to_string(), PasswordHash::parse(&line).unwrap());
    let mut cfg = config(2, 100);
    cfg.auth = AuthConfig {
        anonymous: false,
        users,
        acl: None,
    };
    let b = Broker::with(cfg).await;
    let user_pass = |u: &str, p: &[u8]| {
        let mut t = field(u.as_bytes());
        t.extend(field(p));
        t
    };
    // Wrong password: 0x86.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0xc2, 0, &[], &user_pass("plc", b"nope")))
        .await;
    c.expect(&connack_refused(0x86, Some("bad user name or password")))
        .await;
    c.expect_closed().await;
    // Anonymous while anonymous access is off: 0x87.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &[], &[])).await;
    c.expect(&connack_refused(0x87, Some("not authorized")))
        .await;
    c.expect_closed().await;
    // The same, asking for no problem information: no reason string.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &[0x17, 0], &[])).await;
    c.expect(&connack_refused(0x87, None)).await;
    c.expect_closed().await;
    // An authentication method we do not support: 0x8C, before credentials are looked at.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &prop_str(0x15, "SCRAM-SHA-1"), &[]))
        .await;
    c.expect(&connack_refused(
        0x8c,
        Some("authentication method \"SCRAM-SHA-1\" not supported"),
    ))
    .await;
    c.expect_closed().await;
    // max_connections = 2: the third is refused with 0x97 (quota exceeded).
    let mut held = Vec::new();
    for id in ["x", "y"] {
        let mut c = Client::open(b.addr()).await;
        c.send(&connect5(id, 0xc2, 0, &[], &user_pass("plc", b"s3cret")))
            .await;
        c.expect(&CONNACK_OK).await;
        held.push(c);
    }
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("z", 0xc2, 0, &[], &user_pass("plc", b"s3cret")))
        .await;
    c.expect(&connack_refused(0x97, Some("connection limit reached")))
        .await;
    c.expect_closed().await;
    // A broken CONNECT: CONNACK with the reason (0x82 protocol error, 0x81 malformed), close.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &[0x21, 0, 0], &[])).await;
    c.expect(&connack_refused(
        0x82,
        Some("protocol error: receive maximum 0"),
    ))
    .await;
    c.expect_closed().await;
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 0, &[0x26, 0, 1, 0xff, 0, 0], &[]))
        .await;
    c.expect(&connack_refused(
        0x81,
        Some("malformed packet: invalid UTF-8"),
    ))
    .await;
    c.expect_closed().await;
    // Not MQTT 5 at all: closed without a word, as before.
    let mut c = Client::open(b.addr()).await;
    c.send(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 0, 0, 1, b'x',
    ])
    .await;
    c.expect_closed().await;
}

#[tokio::test]
async fn v5_server_keep_alive_caps_the_clients() {
    let mut cfg = config(32, 100);
    cfg.max_keepalive = 10;
    let b = Broker::with(cfg).await;
    // 60 s asked, 10 s granted and announced.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("a", 0x02, 60, &[], &[])).await;
    c.expect(&[
        0x20, 17, 0, 0, 14, 0x13, 0, 10, 0x21, 0, 64, 0x22, 0, 16, 0x27, 0, 1, 0, 0,
    ])
    .await;
    // Keepalive 0 (none) is capped too.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("b", 0x02, 0, &[], &[])).await;
    c.expect(&[
        0x20, 17, 0, 0, 14, 0x13, 0, 10, 0x21, 0, 64, 0x22, 0, 16, 0x27, 0, 1, 0, 0,
    ])
    .await;
    // 5 s is within the limit: no Server Keep Alive.
    let mut c = Client::open(b.addr()).await;
    c.send(&connect5("c", 0x02, 5, &[], &[])).await;
    c.expect(&CONNACK_OK).await;
    // 3.1.1 clients are not capped (they cannot be told).
    let mut c = Client::open(b.addr()).await;
    c.send(&connect("d", true, 60)).await;
    c.expect(&[0x20, 2, 0, 0]).await;
}

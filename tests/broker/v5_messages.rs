//! MQTT 5 messages: properties passed through to subscribers unchanged (request/response),
//! message expiry on queued and retained messages, and the reason codes of PUBACK, PUBREC,
//! SUBACK and UNSUBACK.

use std::time::Duration;

use edgegate::bus::auth::{AclRule, AuthConfig};

use super::support::*;
use super::v5::*;

/// Payload format, content type, response topic, correlation data, two user properties: in the
/// order the broker writes them.
fn request_props() -> Vec<u8> {
    let mut p = vec![0x01, 1];
    p.extend(prop_str(0x03, "text/plain"));
    p.extend(prop_str(0x08, "reply/42"));
    p.extend([0x09, 0, 3, 1, 2, 3]);
    for (k, v) in [("unit", "C"), ("unit", "F")] {
        p.push(0x26);
        p.extend(field(k.as_bytes()));
        p.extend(field(v.as_bytes()));
    }
    p
}

#[tokio::test]
async fn v5_properties_reach_subscribers_unchanged() {
    let b = Broker::start().await;
    let mut v5sub = client5(&b, "v5sub").await;
    v5sub.send(&subscribe5(1, &[], &[("req/#", 1)])).await;
    v5sub.expect(&[0x90, 4, 0, 1, 0, 1]).await;
    let mut old = b.client("old").await;
    old.subscribe(1, &[("req/#", 1)]).await;
    let mut p = client5(&b, "requester").await;
    p.send(&publish5("req/1", 1, 7, false, &request_props(), b"21.5"))
        .await;
    p.expect(&[0x40, 2, 0, 7]).await;
    v5sub
        .expect(&publish5("req/1", 1, 1, false, &request_props(), b"21.5"))
        .await;
    // A 3.1.1 subscriber gets the message without them.
    old.expect(&publish("req/1", b"21.5", 1, 1, false, false))
        .await;
    // And the responder answers on the response topic with the correlation data.
    let mut requester_sub = client5(&b, "waiter").await;
    requester_sub
        .send(&subscribe5(2, &[], &[("reply/42", 0)]))
        .await;
    requester_sub.expect(&[0x90, 4, 0, 2, 0, 0]).await;
    v5sub
        .send(&publish5(
            "reply/42",
            0,
            0,
            false,
            &[0x09, 0, 3, 1, 2, 3],
            b"ok",
        ))
        .await;
    requester_sub
        .expect(&publish5(
            "reply/42",
            0,
            0,
            false,
            &[0x09, 0, 3, 1, 2, 3],
            b"ok",
        ))
        .await;
}

/// The message expiry interval of a received v5 PUBLISH (QoS 0, no other properties).
fn expiry_of(packet: &[u8]) -> u32 {
    let tlen = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let props = &packet[4 + tlen..];
    assert_eq!(props[..2], [5, 0x02], "{packet:02x?}");
    u32::from_be_bytes([props[2], props[3], props[4], props[5]])
}

#[tokio::test]
async fn v5_message_expiry_on_retained_and_queued_messages() {
    let b = Broker::start().await;
    let mut p = client5(&b, "pub").await;
    // Retained with 1 s and 300 s to live.
    p.send(&publish5("e/short", 0, 0, true, &[0x02, 0, 0, 0, 1], b"s"))
        .await;
    p.send(&publish5("e/long", 0, 0, true, &[0x02, 0, 0, 1, 44], b"l"))
        .await;
    // A persistent v5 session, offline, with a QoS 1 subscription.
    let mut q = Client::open(b.addr()).await;
    q.send(&connect5("q", 0, 0, &[0x11, 0xff, 0xff, 0xff, 0xff], &[]))
        .await;
    q.expect(&CONNACK_OK).await;
    q.send(&subscribe5(1, &[], &[("x/#", 1 | 0x20)])).await; // retain handling 2: none now
    q.expect(&[0x90, 4, 0, 1, 0, 1]).await;
    q.send(&[0xe0, 0]).await;
    q.expect_closed().await;
    p.send(&publish5("x/short", 1, 1, false, &[0x02, 0, 0, 0, 1], b"s"))
        .await;
    p.expect(&[0x40, 2, 0, 1]).await;
    p.send(&publish5("x/long", 1, 2, false, &[0x02, 0, 0, 1, 44], b"l"))
        .await;
    p.expect(&[0x40, 2, 0, 2]).await;
    // Straight away the retained message carries what is left, rounded up: 300 s (a little
    // less if this machine is very slow).
    let mut s = client5(&b, "s1").await;
    s.send(&subscribe5(1, &[], &[("e/long", 0)])).await;
    s.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    let got = read_packet(&mut s).await;
    assert_eq!(
        &got[..10],
        [0x31, 15, 0, 6, b'e', b'/', b'l', b'o', b'n', b'g']
    );
    let left = expiry_of(&got);
    assert!((295..=300).contains(&left), "{left} s left");
    assert_eq!(got.last(), Some(&b'l'));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // After 1.3 s: the short-lived ones are gone, the long ones have less time left.
    let mut s = client5(&b, "s2").await;
    s.send(&subscribe5(1, &[], &[("e/#", 0)])).await;
    s.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    let got = read_packet(&mut s).await;
    assert_eq!(
        &got[..10],
        [0x31, 15, 0, 6, b'e', b'/', b'l', b'o', b'n', b'g']
    );
    let left = expiry_of(&got);
    assert!((280..=299).contains(&left), "{left} s left");
    s.send(&[0xc0, 0]).await;
    s.expect(&[0xd0, 0]).await;
    let mut q = Client::open(b.addr()).await;
    q.send(&connect5("q", 0, 0, &[0x11, 0xff, 0xff, 0xff, 0xff], &[]))
        .await;
    let mut present = CONNACK_OK;
    present[2] = 1;
    q.expect(&present).await;
    let got = read_packet(&mut q).await;
    assert_eq!(
        &got[..11],
        [0x32, 17, 0, 6, b'x', b'/', b'l', b'o', b'n', b'g', 0]
    );
    q.send(&[0xc0, 0]).await;
    q.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn v5_reason_codes_for_denials_and_nothing_to_do() {
    let mut cfg = config(32, 100);
    cfg.auth = AuthConfig {
        anonymous: true,
        users: Default::default(),
        acl: Some(vec![AclRule {
            user: None,
            publish: vec!["open/#".into()],
            subscribe: vec!["open/#".into()],
        }]),
    };
    let b = Broker::with(cfg).await;
    let mut c = client5(&b, "c").await;
    // Denied publish: PUBACK / PUBREC 0x87 with a reason string.
    c.send(&publish5("closed/1", 1, 1, false, &[], b"x")).await;
    let mut denied = vec![0x40, 21, 0, 1, 0x87];
    denied.extend(props(&prop_str(0x1f, "not authorized")));
    c.expect(&denied).await;
    c.send(&publish5("closed/1", 2, 2, false, &[], b"x")).await;
    denied[0] = 0x50;
    denied[3] = 2;
    c.expect(&denied).await;
    // The refused QoS 2 exchange is over: a PUBREL for it is answered, nothing is pending.
    c.send(&[0x62, 2, 0, 2]).await;
    c.expect(&[0x70, 2, 0, 2]).await;
    // Allowed, but nobody subscribes: 0x10.
    c.send(&publish5("open/1", 1, 3, false, &[], b"x")).await;
    c.expect(&[0x40, 3, 0, 3, 0x10]).await;
    // SUBACK: 0x87 for the denied filter (a 3.1.1 client gets 0x80).
    c.send(&subscribe5(4, &[], &[("open/#", 1), ("closed/#", 1)]))
        .await;
    c.expect(&[0x90, 5, 0, 4, 0, 1, 0x87]).await;
    let mut old = b.client("old").await;
    old.send(&subscribe(5, &[("closed/#", 1)])).await;
    old.expect(&[0x90, 3, 0, 5, 0x80]).await;
    // Now there is a subscriber: PUBACK 0.
    c.send(&publish5("open/1", 1, 6, false, &[], b"x")).await;
    c.expect(&[0x40, 2, 0, 6]).await;
    // UNSUBACK: 0x11 for a filter without a subscription.
    let mut unsub = vec![0, 7, 0];
    unsub.extend(field(b"open/#"));
    unsub.extend(field(b"never/#"));
    c.send(&packet(0xa2, &unsub)).await;
    // (The PUBLISH for open/1 to ourselves comes first.)
    let got = read_packet(&mut c).await;
    assert_eq!(got[0] & 0xf0, 0x30, "{got:02x?}");
    c.send(&[0x40, 2, got[got.len() - 4], got[got.len() - 3]])
        .await;
    c.expect(&[0xb0, 5, 0, 7, 0, 0x00, 0x11]).await;
}

#[tokio::test]
async fn v5_properties_count_toward_the_queue_byte_bound() {
    let mut cfg = config(32, 100);
    cfg.max_queued_bytes = 2500;
    let b = Broker::with(cfg).await;
    // A persistent session, offline, subscribed at QoS 1.
    let mut q = Client::open(b.addr()).await;
    q.send(&connect5("q", 0, 0, &[0x11, 0, 0, 0x0e, 0x10], &[]))
        .await;
    q.expect(&CONNACK_OK).await;
    q.send(&subscribe5(1, &[], &[("big/#", 1)])).await;
    q.expect(&[0x90, 4, 0, 1, 0, 1]).await;
    q.send(&[0xe0, 0]).await;
    q.expect_closed().await;
    // Tiny payloads, 1000-byte user properties: only two fit in 2500 bytes.
    let mut user = vec![0x26];
    user.extend(field(b"k"));
    user.extend(field(&[b'v'; 1000]));
    let dropped = b.bus.stats().dropped;
    let mut p = client5(&b, "pub").await;
    for pid in 1..=3u16 {
        p.send(&publish5(
            "big/t",
            1,
            pid,
            false,
            &user,
            &[b'0' + pid as u8],
        ))
        .await;
        let mut ack = vec![0x40, 2];
        ack.extend(pid.to_be_bytes());
        p.expect(&ack).await;
    }
    wait_for_stat(&b, |s| s.dropped == dropped + 1).await;
    // The oldest went; the other two arrive, properties intact.
    let mut q = Client::open(b.addr()).await;
    q.send(&connect5("q", 0, 0, &[0x11, 0, 0, 0x0e, 0x10], &[]))
        .await;
    let mut present = CONNACK_OK;
    present[2] = 1;
    q.expect(&present).await;
    q.expect(&publish5("big/t", 1, 1, false, &user, b"2")).await;
    q.expect(&publish5("big/t", 1, 2, false, &user, b"3")).await;
}

//! Shared subscriptions (`$share/{group}/{filter}`) over raw MQTT 3.1.1 sockets: one member per
//! message, round robin; malformed shares close; no retained; ACL on the inner filter.

use edgegate::bus::auth::{AclRule, AuthConfig};

use super::support::*;

fn unsubscribe(pid: u16, filter: &str) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend(field(filter.as_bytes()));
    packet(0xa2, &body)
}

/// PINGREQ, and PINGRESP as the very next bytes: nothing else was sent before it.
async fn expect_nothing_pending(c: &mut Client) {
    c.send(&[0xc0, 0]).await;
    c.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn shared_group_round_robin_between_two_raw_clients() {
    let b = Broker::start().await;
    let mut a = b.client("a").await;
    let mut c = b.client("c").await;
    a.subscribe(1, &[("$share/g/sh/+", 1)]).await;
    c.subscribe(1, &[("$share/g/sh/+", 0)]).await;
    // An ordinary subscription of "a" that matches too gets its own copy.
    a.subscribe(2, &[("sh/4", 0)]).await;
    let mut publ = b.client("pub").await;
    for (pid, t) in [(1u16, "sh/1"), (2, "sh/2"), (3, "sh/3"), (4, "sh/4")] {
        publ.send(&publish(t, b"v", 1, pid, false, false)).await;
        publ.expect(&puback(pid)).await;
    }
    // "a" (granted QoS 1) gets 1 and 3, "c" (granted 0) gets 2 and 4 downgraded.
    a.expect(b"\x32\x09\x00\x04sh/1\x00\x01v").await;
    a.expect(b"\x32\x09\x00\x04sh/3\x00\x02v").await;
    a.expect(b"\x30\x07\x00\x04sh/4v").await;
    c.expect(b"\x30\x07\x00\x04sh/2v").await;
    c.expect(b"\x30\x07\x00\x04sh/4v").await;
    a.send(&puback(1)).await;
    a.send(&puback(2)).await;
    expect_nothing_pending(&mut a).await;
    expect_nothing_pending(&mut c).await;

    // Unsubscribed by the full `$share/...` string: "c" now gets everything.
    a.send(&unsubscribe(3, "$share/g/sh/+")).await;
    a.expect(&[0xb0, 2, 0, 3]).await;
    publ.send(&publish("sh/5", b"v", 0, 0, false, false)).await;
    publ.send(&publish("sh/6", b"v", 0, 0, false, false)).await;
    c.expect(b"\x30\x07\x00\x04sh/5v").await;
    c.expect(b"\x30\x07\x00\x04sh/6v").await;
    expect_nothing_pending(&mut a).await;
}

#[tokio::test]
async fn malformed_shared_filters_close_the_connection() {
    let b = Broker::start().await;
    for bad in [
        "$share/g",
        "$share//t",
        "$share/g/",
        "$share/g+/t",
        "$share/#/t",
        "$share/g/a#",
    ] {
        let mut c = b.client("bad").await;
        c.send(&subscribe(1, &[("fine", 0), (bad, 0)])).await;
        c.expect_closed().await;
        let mut c = b.client("bad").await;
        c.send(&unsubscribe(2, bad)).await;
        c.expect_closed().await;
    }
    assert_eq!(b.bus.stats().malformed, 12);
}

#[tokio::test]
async fn shared_subscription_gets_no_retained_messages() {
    let b = Broker::start().await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("r/1", b"kept", 1, 1, true, false)).await;
    publ.expect(&puback(1)).await;
    let mut c = b.client("c").await;
    c.subscribe(1, &[("$share/g/r/#", 1)]).await;
    expect_nothing_pending(&mut c).await;
    // An ordinary subscription to the same filter does get it.
    c.subscribe(2, &[("r/#", 1)]).await;
    c.expect(b"\x33\x0b\x00\x03r/1\x00\x01kept").await;
}

#[tokio::test]
async fn offline_persistent_member_queues_for_its_group() {
    let b = Broker::start().await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
    p.subscribe(1, &[("$share/g/q", 1)]).await;
    let mut c = b.client("c").await;
    c.subscribe(1, &[("$share/g/q", 1)]).await;
    p.send(&[0xe0, 0]).await;
    p.expect_closed().await;
    // "c" is the connected member: it gets both; then it leaves with its clean session.
    let mut publ = b.client("pub").await;
    publ.send(&publish("q", b"1", 1, 1, false, false)).await;
    publ.expect(&puback(1)).await;
    publ.send(&publish("q", b"2", 1, 2, false, false)).await;
    publ.expect(&puback(2)).await;
    c.expect(b"\x32\x06\x00\x01q\x00\x011").await;
    c.expect(b"\x32\x06\x00\x01q\x00\x022").await;
    c.send(&[0xe0, 0]).await;
    c.expect_closed().await;
    // Nobody connected: QoS 1 is queued for the persistent member, QoS 0 is not.
    publ.send(&publish("q", b"0", 0, 0, false, false)).await;
    publ.send(&publish("q", b"3", 1, 3, false, false)).await;
    publ.expect(&puback(3)).await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    p.expect(b"\x32\x06\x00\x01q\x00\x013").await;
    p.send(&puback(1)).await;
    expect_nothing_pending(&mut p).await;
}

#[tokio::test]
async fn acl_judges_the_filter_after_the_share_name() {
    let mut cfg = config(32, 100);
    cfg.auth = AuthConfig {
        anonymous: true,
        users: Default::default(),
        acl: Some(vec![AclRule {
            user: None,
            publish: vec!["#".into()],
            subscribe: vec!["plant/#".into()],
        }]),
    };
    let b = Broker::with(cfg).await;
    let mut c = b.client("c").await;
    c.send(&subscribe(
        1,
        &[
            ("$share/g/plant/+", 1),
            ("$share/plant/other", 1),
            ("$share/g/#", 0),
        ],
    ))
    .await;
    c.expect(&[0x90, 5, 0, 1, 0x01, 0x80, 0x80]).await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("plant/x", b"v", 0, 0, false, false))
        .await;
    c.expect(b"\x30\x0a\x00\x07plant/xv").await;
}

#[tokio::test]
async fn in_process_subscribers_cannot_share() {
    let b = Broker::start().await;
    let err = b
        .bus
        .subscribe(&["a/b".into(), "$share/g/a/#".into()], 4, false)
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "shared subscription \"$share/g/a/#\" is for network clients; subscribe in-process to the filter after $share/{group}/"
    );
    let err = b.bus.subscribe(&["$share/g".into()], 4, false).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("invalid topic filter \"$share/g\"")
    );
}

//! MQTT 5 subscription options in the fan-out (no local, retain as published, retain handling)
//! and subscription identifiers.

use super::support::*;
use super::v5::*;

async fn subscribed(b: &Broker, id: &str, p: &[u8], filters: &[(&str, u8)]) -> Client {
    let mut c = client5(b, id).await;
    c.send(&subscribe5(1, p, filters)).await;
    let mut ack = vec![0x90, 3 + filters.len() as u8, 0, 1, 0];
    ack.extend(filters.iter().map(|(_, o)| o & 3));
    c.expect(&ack).await;
    c
}

async fn nothing_more(c: &mut Client) {
    c.send(&[0xc0, 0]).await;
    c.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn v5_no_local_keeps_a_clients_own_messages_from_it() {
    let b = Broker::start().await;
    let mut nl = subscribed(&b, "nl", &[], &[("n/#", 0x04)]).await;
    let mut other = subscribed(&b, "other", &[], &[("n/#", 0)]).await;
    nl.send(&publish5("n/1", 0, 0, false, &[], b"own")).await;
    other
        .expect(&publish5("n/1", 0, 0, false, &[], b"own"))
        .await;
    nothing_more(&mut nl).await;
    other
        .send(&publish5("n/2", 0, 0, false, &[], b"theirs"))
        .await;
    nl.expect(&publish5("n/2", 0, 0, false, &[], b"theirs"))
        .await;
    // An overlapping subscription without no local does deliver its own messages.
    nl.send(&subscribe5(2, &[], &[("n/3", 0)])).await;
    nl.expect(&[0x90, 4, 0, 2, 0, 0]).await;
    nl.send(&publish5("n/3", 0, 0, false, &[], b"own")).await;
    nl.expect(&publish5("n/3", 0, 0, false, &[], b"own")).await;
}

#[tokio::test]
async fn v5_retain_as_published_and_retain_handling() {
    let b = Broker::start().await;
    let mut rap = subscribed(&b, "rap", &[], &[("r/#", 0x08)]).await;
    let mut plain = subscribed(&b, "plain", &[], &[("r/#", 0)]).await;
    let mut p = client5(&b, "pub").await;
    p.send(&publish5("r/1", 0, 0, true, &[], b"v")).await;
    rap.expect(&publish5("r/1", 0, 0, true, &[], b"v")).await;
    plain.expect(&publish5("r/1", 0, 0, false, &[], b"v")).await;

    // Retain handling 0: retained messages on every SUBSCRIBE.
    let mut c = client5(&b, "rh").await;
    for pid in 1..=2u16 {
        c.send(&subscribe5(pid, &[], &[("r/#", 0)])).await;
        c.expect(&[0x90, 4, 0, pid as u8, 0, 0]).await;
        c.expect(&publish5("r/1", 0, 0, true, &[], b"v")).await;
    }
    // 1: only when the subscription is new.
    c.send(&subscribe5(3, &[], &[("r/+", 0x10)])).await;
    c.expect(&[0x90, 4, 0, 3, 0, 0]).await;
    c.expect(&publish5("r/1", 0, 0, true, &[], b"v")).await;
    c.send(&subscribe5(4, &[], &[("r/+", 0x10)])).await;
    c.expect(&[0x90, 4, 0, 4, 0, 0]).await;
    nothing_more(&mut c).await;
    // 2: never.
    c.send(&subscribe5(5, &[], &[("r/1", 0x20)])).await;
    c.expect(&[0x90, 4, 0, 5, 0, 0]).await;
    nothing_more(&mut c).await;
}

#[tokio::test]
async fn v5_subscription_identifiers_go_with_each_delivery() {
    let b = Broker::start().await;
    let mut p = client5(&b, "pub").await;
    p.send(&publish5("s/r", 0, 0, true, &[], b"kept")).await;
    // Retained before the subscription, not delivered live to it.
    p.ping().await;
    // Id 5 on s/#: the retained message comes with it.
    let mut c = client5(&b, "c").await;
    c.send(&subscribe5(1, &[0x0b, 5], &[("s/#", 0)])).await;
    c.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    c.expect(&publish5("s/r", 0, 0, true, &[0x0b, 5], b"kept"))
        .await;
    // Id 200 (two bytes) on s/+/x, and one subscription without an id.
    c.send(&subscribe5(2, &[0x0b, 0xc8, 0x01], &[("s/+/x", 0)]))
        .await;
    c.expect(&[0x90, 4, 0, 2, 0, 0]).await;
    c.send(&subscribe5(3, &[], &[("s/a/+", 0)])).await;
    c.expect(&[0x90, 4, 0, 3, 0, 0]).await;
    p.send(&publish5("s/a/x", 0, 0, false, &[], b"both")).await;
    c.expect(&publish5(
        "s/a/x",
        0,
        0,
        false,
        &[0x0b, 5, 0x0b, 0xc8, 0x01],
        b"both",
    ))
    .await;
    p.send(&publish5("s/b", 0, 0, false, &[], b"one")).await;
    c.expect(&publish5("s/b", 0, 0, false, &[0x0b, 5], b"one"))
        .await;
    // Resubscribing without an id drops it.
    c.send(&subscribe5(4, &[], &[("s/#", 0x20)])).await;
    c.expect(&[0x90, 4, 0, 4, 0, 0]).await;
    p.send(&publish5("s/b", 0, 0, false, &[], b"none")).await;
    c.expect(&publish5("s/b", 0, 0, false, &[], b"none")).await;
    // A 3.1.1 subscriber to the same topic sees a plain PUBLISH.
    let mut old = b.client("old").await;
    old.subscribe(1, &[("s/b", 0)]).await;
    p.send(&publish5("s/b", 0, 0, false, &[], b"x")).await;
    old.expect(&publish("s/b", b"x", 0, 0, false, false)).await;
}

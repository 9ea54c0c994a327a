//! Gateway -> client: SUBSCRIBE with wildcards, REGISTER before PUBLISH, retransmission with
//! DUP, QoS 2 outbound, sleeping clients, and sessions across a restart.

use std::time::Duration;

use rumqttc::QoS;

use crate::client::*;

/// Tretry 300 ms, Nretry 2: retransmissions within a test's patience.
const FAST_RETRY: &str = "  retry_interval: 300ms\n  max_retries: 2\n";

#[tokio::test]
async fn wildcard_subscription_registers_before_publish_and_retransmits_with_dup() {
    let site = Site::start(FAST_RETRY).await;
    let c = Sn::open(site.udp).await;
    c.connect("sub1", true, 60).await;
    // SUBSCRIBE QoS 1 to a wildcard filter: SUBACK QoS 1, topic id 0.
    c.send(&subscribe(0x20, 0x0011, "farm/+/cmd")).await;
    c.expect(&[0x08, 0x13, 0x20, 0x00, 0x00, 0x00, 0x11, 0x00])
        .await;
    // SUBSCRIBE to a plain name: its topic id comes back in the SUBACK.
    c.send(&subscribe(0x00, 0x0012, "farm/all")).await;
    c.expect(&[0x08, 0x13, 0x00, 0x00, 0x01, 0x00, 0x12, 0x00])
        .await;

    let bus = site.bus_client().await;
    bus.publish("farm/pump/cmd", QoS::AtLeastOnce, false, "on")
        .await
        .unwrap();
    // REGISTER topic id 2 (id 1 is farm/all), message id 1, then nothing until REGACK.
    let mut reg = vec![0x13, 0x0A, 0x00, 0x02, 0x00, 0x01];
    reg.extend_from_slice(b"farm/pump/cmd");
    c.expect(&reg).await;
    // Not acknowledged: the same REGISTER again after Tretry.
    c.expect(&reg).await;
    c.send(&[0x07, 0x0B, 0x00, 0x02, 0x00, 0x01, 0x00]).await;
    // PUBLISH QoS 1, topic id 2, message id 2.
    c.expect(&[0x09, 0x0C, 0x20, 0x00, 0x02, 0x00, 0x02, b'o', b'n'])
        .await;
    // No PUBACK: retransmitted with DUP.
    c.expect(&[0x09, 0x0C, 0xA0, 0x00, 0x02, 0x00, 0x02, b'o', b'n'])
        .await;
    c.send(&[0x07, 0x0D, 0x00, 0x02, 0x00, 0x02, 0x00]).await;
    c.expect_silence(Duration::from_millis(500)).await;

    // QoS 0 on the plain topic: straight out with its id, no REGISTER.
    bus.publish("farm/all", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    c.expect(&[0x08, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00, b'x'])
        .await;
    // Now known: a second message on farm/pump/cmd goes without REGISTER.
    bus.publish("farm/pump/cmd", QoS::AtLeastOnce, false, "off")
        .await
        .unwrap();
    c.expect(&[0x0A, 0x0C, 0x20, 0x00, 0x02, 0x00, 0x03, b'o', b'f', b'f'])
        .await;
    c.send(&[0x07, 0x0D, 0x00, 0x02, 0x00, 0x03, 0x00]).await;

    // UNSUBSCRIBE: UNSUBACK, then nothing more.
    let mut unsub = subscribe(0x00, 0x0013, "farm/+/cmd");
    unsub[1] = 0x14;
    c.send(&unsub).await;
    c.expect(&[0x04, 0x15, 0x00, 0x13]).await;
    bus.publish("farm/pump/cmd", QoS::AtLeastOnce, false, "gone")
        .await
        .unwrap();
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn qos2_to_the_client_and_retries_used_up_lose_it() {
    let site = Site::start(FAST_RETRY).await;
    let wills = site.subscriber("wills/#").await;
    let c = Sn::open(site.udp).await;
    c.send(&connect("sub2", true, true, 60)).await;
    c.expect(&[0x02, 0x06]).await;
    let mut wt = vec![0x0D, 0x07, 0x00];
    wt.extend_from_slice(b"wills/sub2");
    c.send(&wt).await;
    c.expect(&[0x02, 0x08]).await;
    c.send(&[0x05, 0x09, b'b', b'y', b'e']).await;
    c.expect(&[0x03, 0x05, 0x00]).await;
    // A short topic name: SUBACK QoS 2, topic id 0; deliveries use the short name itself.
    c.send(&[0x07, 0x12, 0x42, 0x00, 0x01, b'q', b'z']).await;
    c.expect(&[0x08, 0x13, 0x40, 0x00, 0x00, 0x00, 0x01, 0x00])
        .await;
    let bus = site.bus_client().await;
    bus.publish("qz", QoS::ExactlyOnce, false, "v")
        .await
        .unwrap();
    c.expect(&[0x08, 0x0C, 0x42, b'q', b'z', 0x00, 0x01, b'v'])
        .await;
    c.send(&[0x04, 0x0F, 0x00, 0x01]).await; // PUBREC
    c.expect(&[0x04, 0x10, 0x00, 0x01]).await; // PUBREL
    c.expect(&[0x04, 0x10, 0x00, 0x01]).await; // again, no PUBCOMP yet
    c.send(&[0x04, 0x0E, 0x00, 0x01]).await;
    c.expect_silence(Duration::from_millis(400)).await;

    // A message the client never acknowledges: 1 send + 2 retries, then the client is lost
    // and its will goes out.
    bus.publish("qz", QoS::ExactlyOnce, false, "w")
        .await
        .unwrap();
    c.expect(&[0x08, 0x0C, 0x42, b'q', b'z', 0x00, 0x02, b'w'])
        .await;
    c.expect(&[0x08, 0x0C, 0xC2, b'q', b'z', 0x00, 0x02, b'w'])
        .await;
    c.expect(&[0x08, 0x0C, 0xC2, b'q', b'z', 0x00, 0x02, b'w'])
        .await;
    assert_eq!(wait_message(&wills, "wills/sub2").await, b"bye");
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn sleeping_client_gets_its_buffered_messages_then_pingresp() {
    let site = Site::start("  max_buffered: 2\n").await;
    let c = Sn::open(site.udp).await;
    c.connect("sleepy", false, 60).await;
    c.send(&subscribe(0x20, 1, "farm/valve")).await;
    c.expect(&[0x08, 0x13, 0x20, 0x00, 0x01, 0x00, 0x01, 0x00])
        .await;
    // DISCONNECT with a duration of 10 s: asleep; the gateway answers DISCONNECT.
    c.send(&[0x04, 0x18, 0x00, 0x0A]).await;
    c.expect(&[0x02, 0x18]).await;
    let bus = site.bus_client().await;
    for v in ["1", "2", "3"] {
        bus.publish("farm/valve", QoS::AtLeastOnce, false, v)
            .await
            .unwrap();
    }
    c.expect_silence(Duration::from_millis(500)).await;
    // Buffer of 2: the oldest was dropped, and counted.
    wait_stats(&site, |s| {
        s["counters"]["buffer_dropped"] == 1 && s["clients"]["asleep"] == 1
    })
    .await;
    // Awake: PINGREQ with the client id; buffered messages, each acknowledged, then PINGRESP.
    c.send(&[0x08, 0x16, b's', b'l', b'e', b'e', b'p', b'y'])
        .await;
    c.expect(&[0x08, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x01, b'2'])
        .await;
    c.send(&[0x07, 0x0D, 0x00, 0x01, 0x00, 0x01, 0x00]).await;
    c.expect(&[0x08, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x02, b'3'])
        .await;
    c.send(&[0x07, 0x0D, 0x00, 0x01, 0x00, 0x02, 0x00]).await;
    c.expect(&[0x02, 0x17]).await;
    // Back asleep: a new message waits for the next wake-up.
    bus.publish("farm/valve", QoS::AtLeastOnce, false, "4")
        .await
        .unwrap();
    c.expect_silence(Duration::from_millis(400)).await;
    c.send(&[0x08, 0x16, b's', b'l', b'e', b'e', b'p', b'y'])
        .await;
    c.expect(&[0x08, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x03, b'4'])
        .await;
    c.send(&[0x07, 0x0D, 0x00, 0x01, 0x00, 0x03, 0x00]).await;
    c.expect(&[0x02, 0x17]).await;
    // A wake-up with nothing waiting: PINGRESP at once.
    c.send(&[0x08, 0x16, b's', b'l', b'e', b'e', b'p', b'y'])
        .await;
    c.expect(&[0x02, 0x17]).await;
}

#[tokio::test]
async fn registrations_and_subscriptions_survive_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::start_in(dir, "").await;
    let c = Sn::open(site.udp).await;
    c.connect("keeper", false, 60).await;
    let id = c.register("radio/keeper/temp", 1).await;
    c.send(&subscribe(0x20, 2, "farm/keeper/+")).await;
    c.expect(&[0x08, 0x13, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00])
        .await;
    {
        let bus = site.bus_client().await;
        bus.publish("farm/keeper/set", QoS::AtLeastOnce, false, "a")
            .await
            .unwrap();
        let mut reg = vec![0x15, 0x0A, 0x00, 0x02, 0x00, 0x01];
        reg.extend_from_slice(b"farm/keeper/set");
        c.expect(&reg).await;
        c.send(&[0x07, 0x0B, 0x00, 0x02, 0x00, 0x01, 0x00]).await;
        c.expect(&[0x08, 0x0C, 0x20, 0x00, 0x02, 0x00, 0x02, b'a'])
            .await;
        c.send(&[0x07, 0x0D, 0x00, 0x02, 0x00, 0x02, 0x00]).await;
    }
    // Several commit intervals, then a crash.
    tokio::time::sleep(Duration::from_millis(500)).await;
    site.gw.kill9();
    site.gw.start();
    site.wait_ready().await;

    // The client never reconnects: its topic id still publishes...
    let sub = site.subscriber("radio/#").await;
    c.send(&publish(0x20, id, 3, b"after")).await;
    c.expect(&[0x07, 0x0D, 0x00, id as u8, 0x00, 0x03, 0x00])
        .await;
    assert_eq!(wait_message(&sub, "radio/keeper/temp").await, b"after");
    // ...and its subscription still delivers, with the topic id it already acknowledged.
    let bus = site.bus_client().await;
    bus.publish("farm/keeper/set", QoS::AtLeastOnce, false, "b")
        .await
        .unwrap();
    let got = c.recv().await;
    assert_eq!(got[..5], [0x08, 0x0C, 0x20, 0x00, 0x02], "{got:02x?}");
    assert_eq!(got[7], b'b');
    c.send(&[0x07, 0x0D, 0x00, 0x02, got[5], got[6], 0x00])
        .await;
}

#[tokio::test]
async fn a_sleeping_clients_buffered_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::start_in(dir, "").await;
    let c = Sn::open(site.udp).await;
    c.connect("dozer", false, 60).await;
    c.send(&subscribe(0x20, 1, "farm/dozer/set")).await;
    c.expect(&[0x08, 0x13, 0x20, 0x00, 0x01, 0x00, 0x01, 0x00])
        .await;
    c.send(&[0x04, 0x18, 0x00, 0x3C]).await;
    c.expect(&[0x02, 0x18]).await;
    let bus = site.bus_client().await;
    bus.publish("farm/dozer/set", QoS::AtLeastOnce, false, "open")
        .await
        .unwrap();
    wait_stats(&site, |s| s["clients"]["asleep"] == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    site.gw.kill9();
    site.gw.start();
    site.wait_ready().await;
    // Wakes up after the gateway's crash: the message is still there, then PINGRESP.
    c.send(&[0x07, 0x16, b'd', b'o', b'z', b'e', b'r']).await;
    c.expect(&[
        0x0B, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x01, b'o', b'p', b'e', b'n',
    ])
    .await;
    c.send(&[0x07, 0x0D, 0x00, 0x01, 0x00, 0x01, 0x00]).await;
    c.expect(&[0x02, 0x17]).await;
}

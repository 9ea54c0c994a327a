//! The MQTT-SN gateway of the real binary: raw UDP datagrams in, exact bytes out, values on the
//! local bus.

mod support;

#[path = "mqttsn/client.rs"]
mod client;

#[path = "mqttsn/delivery.rs"]
mod delivery;

#[path = "mqttsn/interop.rs"]
mod interop;

#[path = "mqttsn/sessions.rs"]
mod sessions;

#[path = "mqttsn/codec_props.rs"]
mod codec_props;

#[path = "mqttsn/reload.rs"]
mod reload;

use std::time::Duration;

use client::*;

#[tokio::test]
async fn connect_register_and_publish_at_every_qos() {
    let site = Site::start("").await;
    let sub = site.subscriber("radio/#").await;
    let c = Sn::open(site.udp).await;
    c.connect("node1", true, 60).await;
    let id = c.register("radio/node1/temp", 1).await;
    assert_eq!(id, 1);
    let [hi, lo] = id.to_be_bytes();

    // QoS 0: nothing back.
    c.send(&publish(0x00, id, 0, b"q0")).await;
    // QoS 1: PUBACK with topic id, message id, accepted.
    c.send(&publish(0x20, id, 0x0102, b"q1")).await;
    c.expect(&[0x07, 0x0D, hi, lo, 0x01, 0x02, 0x00]).await;
    // The same QoS 1 message again with DUP: acknowledged, not published twice.
    c.send(&publish(0xA0, id, 0x0102, b"q1")).await;
    c.expect(&[0x07, 0x0D, hi, lo, 0x01, 0x02, 0x00]).await;
    // QoS 2: PUBREC; a DUP before PUBREL gets PUBREC again; PUBREL -> PUBCOMP.
    c.send(&publish(0x40, id, 0x0203, b"q2")).await;
    c.expect(&[0x04, 0x0F, 0x02, 0x03]).await;
    c.send(&publish(0xC0, id, 0x0203, b"q2")).await;
    c.expect(&[0x04, 0x0F, 0x02, 0x03]).await;
    c.send(&[0x04, 0x10, 0x02, 0x03]).await;
    c.expect(&[0x04, 0x0E, 0x02, 0x03]).await;
    // An unknown topic id: PUBACK "invalid topic id", nothing published.
    c.send(&publish(0x20, 0x0999, 0x0004, b"lost")).await;
    c.expect(&[0x07, 0x0D, 0x09, 0x99, 0x00, 0x04, 0x02]).await;
    // Retained, 3-byte length form: 300 bytes of payload.
    let big = vec![b'x'; 300];
    let mut p = vec![0x01, 0x01, 0x35, 0x0C, 0x30, hi, lo, 0x00, 0x05];
    p.extend_from_slice(&big);
    c.send(&p).await;
    c.expect(&[0x07, 0x0D, hi, lo, 0x00, 0x05, 0x00]).await;
    c.send(&[0x02, 0x16]).await;
    c.expect(&[0x02, 0x17]).await;

    let topic = "radio/node1/temp";
    support::wait_for("four messages on the bus", wait(), || {
        payloads(&sub, topic).len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let big = String::from_utf8(big).unwrap();
    assert_eq!(payloads(&sub, topic), vec!["q0", "q1", "q2", big.as_str()]);
    let retained = site.subscriber(topic).await;
    assert_eq!(wait_message(&retained, topic).await.len(), 300);

    c.send(&[0x02, 0x18]).await;
    c.expect(&[0x02, 0x18]).await;
}

#[tokio::test]
async fn qos_minus_one_needs_no_connection_predefined_and_short_topics() {
    let site = Site::start("  predefined:\n    - {id: 257, topic: \"radio/beacon/level\"}\n").await;
    let sub = site.subscriber("#").await;
    let c = Sn::open(site.udp).await;
    c.send(&publish(0x61, 0x0101, 0, b"42")).await;
    c.send(&publish(0x62, u16::from_be_bytes(*b"ab"), 0, b"short"))
        .await;
    // An unknown predefined id and a normal id without a connection: dropped, no answer.
    c.send(&publish(0x61, 0x0102, 0, b"no")).await;
    c.send(&publish(0x60, 0x0001, 0, b"no")).await;
    c.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(wait_message(&sub, "radio/beacon/level").await, b"42");
    assert_eq!(wait_message(&sub, "ab").await, b"short");
    // Predefined ids work for connected clients too, with QoS 1.
    c.connect("node2", true, 0).await;
    c.send(&publish(0x21, 0x0101, 9, b"43")).await;
    c.expect(&[0x07, 0x0D, 0x01, 0x01, 0x00, 0x09, 0x00]).await;
    support::wait_for("second beacon", wait(), || {
        payloads(&sub, "radio/beacon/level") == ["42", "43"]
    })
    .await;
    // SUBSCRIBE to the predefined id: SUBACK carries it, deliveries use it with no REGISTER.
    c.send(&[0x07, 0x12, 0x21, 0x00, 0x0A, 0x01, 0x01]).await;
    c.expect(&[0x08, 0x13, 0x20, 0x01, 0x01, 0x00, 0x0A, 0x00])
        .await;
    let bus = site.bus_client().await;
    bus.publish("radio/beacon/level", rumqttc::QoS::AtMostOnce, false, "44")
        .await
        .unwrap();
    c.expect(&[0x09, 0x0C, 0x01, 0x01, 0x01, 0x00, 0x00, b'4', b'4'])
        .await;
    // UNSUBSCRIBE by predefined id.
    c.send(&[0x07, 0x14, 0x01, 0x00, 0x0B, 0x01, 0x01]).await;
    c.expect(&[0x04, 0x15, 0x00, 0x0B]).await;
    wait_stats(&site, |s| s["counters"]["invalid_topic"] == 2).await;
}

#[tokio::test]
async fn will_flow_updates_and_will_on_keepalive_expiry() {
    let site = Site::start("").await;
    let sub = site.subscriber("wills/#").await;
    let c = Sn::open(site.udp).await;
    c.send(&connect("node3", true, true, 1)).await;
    c.expect(&[0x02, 0x06]).await; // WILLTOPICREQ
                                   // WILLTOPIC QoS 1, retained, "wills/node3".
    let mut wt = vec![0x0E, 0x07, 0x30];
    wt.extend_from_slice(b"wills/node3");
    c.send(&wt).await;
    c.expect(&[0x02, 0x08]).await; // WILLMSGREQ
    c.send(&[0x06, 0x09, b'g', b'o', b'n', b'e']).await;
    c.expect(&[0x03, 0x05, 0x00]).await;
    // WILLTOPICUPD to another topic, WILLMSGUPD to another message.
    let mut upd = vec![0x0E, 0x1A, 0x20];
    upd.extend_from_slice(b"wills/node9");
    c.send(&upd).await;
    c.expect(&[0x03, 0x1B, 0x00]).await;
    c.send(&[0x06, 0x1C, b'l', b'o', b's', b't']).await;
    c.expect(&[0x03, 0x1D, 0x00]).await;
    // Silence: after 1.5 x 1 s the gateway gives the client up and publishes the will.
    let start = std::time::Instant::now();
    assert_eq!(wait_message(&sub, "wills/node9").await, b"lost");
    assert!(
        start.elapsed() >= Duration::from_millis(1200),
        "will too early"
    );
    assert!(payloads(&sub, "wills/node3").is_empty());
    // The client is lost: its PUBLISH is not served.
    c.send(&publish(0x20, 1, 1, b"x")).await;
    c.expect_silence(Duration::from_millis(300)).await;

    // A clean DISCONNECT publishes no will; an empty WILLTOPIC means no will at all.
    let d = Sn::open(site.udp).await;
    d.send(&connect("node4", true, true, 1)).await;
    d.expect(&[0x02, 0x06]).await;
    d.send(&[0x02, 0x07]).await;
    d.expect(&[0x03, 0x05, 0x00]).await;
    d.send(&[0x02, 0x18]).await;
    d.expect(&[0x02, 0x18]).await;
}

#[tokio::test]
async fn advertise_searchgw_gwinfo_and_forwarder_encapsulation() {
    let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let adv = listener.local_addr().unwrap();
    let site = Site::start(&format!(
        "  advertise:\n    address: \"{adv}\"\n    interval: 1s\n"
    ))
    .await;
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        let (n, from) = tokio::time::timeout(wait(), listener.recv_from(&mut buf))
            .await
            .expect("no ADVERTISE")
            .unwrap();
        assert_eq!(&buf[..n], &[0x05, 0x00, 0x07, 0x00, 0x01]);
        assert_eq!(from, site.udp);
    }
    let c = Sn::open(site.udp).await;
    c.send(&[0x03, 0x01, 0x01]).await;
    c.expect(&[0x03, 0x02, 0x07]).await;
    // Through a forwarder: node 0xBEEF's SEARCHGW, answered encapsulated to the same node.
    c.send(&[0x05, 0xFE, 0x01, 0xBE, 0xEF, 0x03, 0x01, 0x00])
        .await;
    c.expect(&[0x05, 0xFE, 0x01, 0xBE, 0xEF, 0x03, 0x02, 0x07])
        .await;
    // Two nodes behind one forwarder are two clients.
    c.send(
        &[
            &[0x05, 0xFE, 0x00, 0x00, 0x01][..],
            &connect("fw-a", false, true, 0),
        ]
        .concat(),
    )
    .await;
    c.expect(&[0x05, 0xFE, 0x00, 0x00, 0x01, 0x03, 0x05, 0x00])
        .await;
    c.send(
        &[
            &[0x05, 0xFE, 0x00, 0x00, 0x02][..],
            &connect("fw-b", false, true, 0),
        ]
        .concat(),
    )
    .await;
    c.expect(&[0x05, 0xFE, 0x00, 0x00, 0x02, 0x03, 0x05, 0x00])
        .await;
    c.send(&[0x05, 0xFE, 0x00, 0x00, 0x02, 0x02, 0x16]).await;
    c.expect(&[0x05, 0xFE, 0x00, 0x00, 0x02, 0x02, 0x17]).await;
    // fw-b registers and publishes at QoS 1 through the forwarder.
    let sub = site.subscriber("radio/#").await;
    let mut reg = vec![
        0x05, 0xFE, 0x00, 0x00, 0x02, 0x10, 0x0A, 0x00, 0x00, 0x00, 0x01,
    ];
    reg.extend_from_slice(b"radio/fw-b");
    c.send(&reg).await;
    c.expect(&[
        0x05, 0xFE, 0x00, 0x00, 0x02, 0x07, 0x0B, 0x00, 0x01, 0x00, 0x01, 0x00,
    ])
    .await;
    c.send(
        &[
            &[0x05, 0xFE, 0x00, 0x00, 0x02][..],
            &publish(0x20, 1, 2, b"7"),
        ]
        .concat(),
    )
    .await;
    c.expect(&[
        0x05, 0xFE, 0x00, 0x00, 0x02, 0x07, 0x0D, 0x00, 0x01, 0x00, 0x02, 0x00,
    ])
    .await;
    assert_eq!(wait_message(&sub, "radio/fw-b").await, b"7");
}

#[tokio::test]
async fn malformed_datagrams_are_counted_per_source_and_harm_no_one() {
    let site = Site::start("  max_message_size: 64\n").await;
    let sub = site.subscriber("radio/#").await;
    let good = Sn::open(site.udp).await;
    good.connect("good", true, 60).await;
    let id = good.register("radio/good", 1).await;
    let bad = Sn::open(site.udp).await;
    let garbage: [&[u8]; 7] = [
        &[],
        &[0x00],
        &[0x05, 0x0C, 0x00],
        &[0x02, 0x03],
        &[0x07, 0x04, 0x04, 0x02, 0x00, 0x3C, b'c'],
        &[0x01, 0x00, 0x02, 0x16],
        &[0x50; 80],
    ];
    for (i, g) in garbage.iter().enumerate() {
        bad.send(g).await;
        good.send(&publish(0x20, id, i as u16 + 1, b"ok")).await;
        let [a, b] = (i as u16 + 1).to_be_bytes();
        good.expect(&[0x07, 0x0D, 0x00, id as u8, a, b, 0x00]).await;
    }
    bad.expect_silence(Duration::from_millis(200)).await;
    support::wait_for("seven publishes", wait(), || {
        payloads(&sub, "radio/good").len() == 7
    })
    .await;
    let source = bad.local().to_string();
    let s = wait_stats(&site, |s| {
        s["malformed_by_source"][&source] == 7 && s["oversized"] == 1
    })
    .await;
    assert!(s["malformed_by_source"]
        .get(good.local().to_string())
        .is_none());
}

#[tokio::test]
async fn rate_limit_answers_congestion() {
    let site = Site::start("  max_rate: 5\n").await;
    let c = Sn::open(site.udp).await;
    c.connect("fast", true, 60).await;
    let id = c.register("radio/fast", 1).await;
    let mut congested = 0;
    for i in 1..=20u16 {
        c.send(&publish(0x20, id, i, b"1")).await;
        let r = c.recv().await;
        assert_eq!(
            &r[..6],
            &[0x07, 0x0D, 0x00, id as u8, (i >> 8) as u8, i as u8]
        );
        if r[6] == 0x01 {
            congested += 1;
        }
    }
    // A burst of 5, then 5 per second: most of 20 back-to-back publishes are refused.
    assert!(congested >= 10, "only {congested} of 20 refused");
}

#[tokio::test]
async fn a_dup_of_an_accepted_publish_is_a_duplicate_before_any_rate_check() {
    let site = Site::start("  max_rate: 1\n").await;
    let sub = site.subscriber("radio/#").await;
    let c = Sn::open(site.udp).await;
    c.connect("dupe", true, 60).await;
    let id = c.register("radio/dupe", 1).await;
    let [hi, lo] = id.to_be_bytes();
    // QoS 2 takes the one token; its DUP before PUBREL is answered PUBREC again, not congestion.
    c.send(&publish(0x40, id, 7, b"once")).await;
    c.expect(&[0x04, 0x0F, 0x00, 0x07]).await;
    c.send(&publish(0xC0, id, 7, b"once")).await;
    c.expect(&[0x04, 0x0F, 0x00, 0x07]).await;
    c.send(&[0x04, 0x10, 0x00, 0x07]).await;
    c.expect(&[0x04, 0x0E, 0x00, 0x07]).await;
    // The same for a QoS 1 DUP of an accepted message, once a token is back.
    let refused = [0x07, 0x0D, hi, lo, 0x00, 0x08, 0x01];
    let mut r = refused.to_vec();
    for _ in 0..50 {
        if r != refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send(&publish(0x20, id, 8, b"one")).await;
        r = c.recv().await;
    }
    assert_eq!(r, [0x07, 0x0D, hi, lo, 0x00, 0x08, 0x00]);
    c.send(&publish(0xA0, id, 8, b"one")).await;
    c.expect(&[0x07, 0x0D, hi, lo, 0x00, 0x08, 0x00]).await;
    support::wait_for("both messages", wait(), || {
        payloads(&sub, "radio/dupe").len() >= 2
    })
    .await;
    let stats = wait_stats(&site, |s| s["counters"]["publishes_in"] == 2).await;
    assert_eq!(payloads(&sub, "radio/dupe"), ["once", "one"], "{stats}");
}

#[tokio::test]
async fn readings_mapping_normalizes_like_a_sensor_and_ipv6_works() {
    let broker = support::free_port();
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}  topics:\n    - {{filter: \"radio/+/+\", as: readings, unit: degC}}\n    - {{filter: \"raw/#\", as: bus, prefix: \"{{site}}/{{gateway}}/sn/\"}}\n",
        site_yaml(broker, port, "").replace(
            &format!("listen: [\"127.0.0.1:{port}\"]"),
            &format!("listen: [\"127.0.0.1:{port}\", \"[::1]:{port}\"]")
        )
    );
    let mut gw = support::Gateway::new(dir.path(), &yaml);
    gw.start();
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let c = Sn::open(v6).await;
    let mut ready = false;
    for _ in 0..100 {
        c.send(&[0x03, 0x01, 0x00]).await;
        let mut b = [0u8; 8];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(100), c.sock.recv_from(&mut b)).await
        {
            ready = true;
            break;
        }
    }
    assert!(ready, "no GWINFO over IPv6\n{}", gw.log());
    let sub = support::Subscriber::start(broker, "t-read", "farm/#", false).await;
    c.connect("node7", true, 60).await;
    let id = c.register("radio/node7/temperature", 1).await;
    c.send(&publish(0x20, id, 2, b"21.5")).await;
    c.expect(&[0x07, 0x0D, 0x00, id as u8, 0x00, 0x02, 0x00])
        .await;
    let id2 = c.register("radio/node7/humidity", 3).await;
    c.send(&publish(0x00, id2, 0, br#"{"value": 40.25}"#)).await;
    c.send(&publish(0x00, id2, 0, b"wet")).await;
    let raw = c.register("raw/node7/log", 4).await;
    c.send(&publish(0x00, raw, 0, b"boot")).await;

    let t = wait_message(&sub, "farm/gw1/node7/temperature").await;
    let j: serde_json::Value = serde_json::from_slice(&t).unwrap();
    assert_eq!(
        (j["value"].as_f64(), j["unit"].as_str()),
        (Some(21.5), Some("degC"))
    );
    assert_eq!(j["quality"], "good");
    assert!(j["seq"].as_u64().is_some());
    let h = wait_message(&sub, "farm/gw1/node7/humidity").await;
    let j: serde_json::Value = serde_json::from_slice(&h).unwrap();
    assert_eq!(j["value"].as_f64(), Some(40.25));
    assert_eq!(
        wait_message(&sub, "farm/gw1/sn/raw/node7/log").await,
        b"boot"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        payloads(&sub, "farm/gw1/node7/humidity").len(),
        1,
        "`wet` became a reading"
    );
    assert!(gw.log().contains("not a number"), "{}", gw.log());
}

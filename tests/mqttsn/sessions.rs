//! Client sessions over time: what a restart restores, what a lost node gets back, and how long a
//! session that never returns holds its place.

use std::collections::HashMap;

use rumqttc::QoS;

use crate::client::*;

#[tokio::test]
async fn a_restart_restores_subscriptions_without_sending_retained_messages_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::start_in(dir, "  max_buffered: 3\n").await;
    let c = Sn::open(site.udp).await;
    c.connect("dozer", false, 60).await;
    c.send(&subscribe(0x20, 1, "farm/dozer/+")).await;
    c.expect(&[0x08, 0x13, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00])
        .await;
    let bus = site.bus_client().await;
    for (t, v) in [
        ("farm/dozer/a", "1"),
        ("farm/dozer/b", "2"),
        ("farm/dozer/c", "3"),
    ] {
        bus.publish(t, QoS::AtLeastOnce, true, v).await.unwrap();
    }
    let mut names = HashMap::new();
    for v in ["1", "2", "3"] {
        assert_eq!(c.next_publish(&mut names).await.payload, v.as_bytes());
    }
    // Asleep, with one command buffered for it.
    c.send(&[0x04, 0x18, 0x00, 0x3C]).await;
    c.expect(&[0x02, 0x18]).await;
    bus.publish("farm/dozer/cmd", QoS::AtLeastOnce, false, "open")
        .await
        .unwrap();
    wait_committed(&site, "the buffered command and 3 retained values", |s| {
        saved_session(s, "dozer")
            .is_some_and(|v| v["queue"].as_array().is_some_and(|q| q.len() == 1))
            // Only the node's topics: the gateway's own retained stats join them once
            // `stats_interval` has passed, which an emulated run reaches before this.
            && saved_rows(s, "bus.retained")
                .iter()
                .filter(|(k, _)| k.starts_with("farm/dozer/"))
                .count()
                == 3
    })
    .await;
    site.gw.kill9();
    site.gw.start();
    site.wait_ready().await;
    // Wakes: the command, and nothing it already had.
    c.send(&[0x07, 0x16, b'd', b'o', b'z', b'e', b'r']).await;
    let got = c.next_publish(&mut names).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("farm/dozer/cmd", &b"open"[..])
    );
    c.expect(&[0x02, 0x17]).await;
}

/// Tretry 300 ms, Nretry 2: a node that stops acknowledging is lost within a second.
const FAST_RETRY: &str = "  retry_interval: 300ms\n  max_retries: 2\n";

/// A persistent node stops acknowledging and is lost with a message in flight; another is
/// buffered for it; it connects again (after a `kill -9` and restart of the gateway when
/// `restart`) and gets both, in order, the first with DUP and its message id.
async fn lost_node_returns(restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::start_in(dir, FAST_RETRY).await;
    let c = Sn::open(site.udp).await;
    c.connect("lossy", false, 60).await;
    c.send(&subscribe(0x20, 1, "farm/lossy/cmd")).await;
    c.expect(&[0x08, 0x13, 0x20, 0x00, 0x01, 0x00, 0x01, 0x00])
        .await;
    let bus = site.bus_client().await;
    bus.publish("farm/lossy/cmd", QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    let one = [0x0A, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x01, b'o', b'n', b'e'];
    let one_dup = [0x0A, 0x0C, 0xA0, 0x00, 0x01, 0x00, 0x01, b'o', b'n', b'e'];
    c.expect(&one).await;
    c.expect(&one_dup).await;
    c.expect(&one_dup).await;
    wait_stats(&site, |s| s["clients"]["lost"] == 1).await;
    bus.publish("farm/lossy/cmd", QoS::AtLeastOnce, false, "two")
        .await
        .unwrap();
    wait_committed(&site, "the buffered message", |s| {
        saved_session(s, "lossy")
            .is_some_and(|v| v["queue"].as_array().is_some_and(|q| q.len() == 1))
    })
    .await;
    if restart {
        site.gw.kill9();
        site.gw.start();
        site.wait_ready().await;
    }
    c.connect("lossy", false, 60).await;
    c.expect(&one_dup).await;
    c.send(&[0x07, 0x0D, 0x00, 0x01, 0x00, 0x01, 0x00]).await;
    c.expect(&[0x0A, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x02, b't', b'w', b'o'])
        .await;
    c.send(&[0x07, 0x0D, 0x00, 0x01, 0x00, 0x02, 0x00]).await;
    c.expect_silence(std::time::Duration::from_millis(400))
        .await;
    wait_stats(&site, |s| {
        s["counters"]["buffer_dropped"] == 0 && s["clients"]["active"] == 1
    })
    .await;
}

#[tokio::test]
async fn a_lost_persistent_node_gets_its_in_flight_message_again_first() {
    lost_node_returns(false).await;
}

#[tokio::test]
async fn a_lost_persistent_nodes_in_flight_message_survives_a_crash() {
    lost_node_returns(true).await;
}

#[tokio::test]
async fn one_source_cannot_fill_max_clients_and_its_sessions_expire_across_a_restart() {
    let expiry = std::time::Duration::from_secs(if crate::support::emulated() { 12 } else { 4 });
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "  max_clients: 4\n  max_clients_per_source: 2\n  session_expiry: {}s\n",
        expiry.as_secs()
    );
    let mut site = Site::start_in(dir, &extra).await;
    let accepted = [0x03, 0x05, 0x00];
    let congestion = [0x03, 0x05, 0x01];
    // One source cycles client ids with clean session off: two sessions, then no more.
    let a = Sn::open(site.udp).await;
    for (id, want) in [
        ("a1", accepted),
        ("a2", accepted),
        ("a3", congestion),
        ("a4", congestion),
    ] {
        a.send(&connect(id, false, false, 60)).await;
        a.expect(&want).await;
    }
    a.send(&[0x02, 0x18]).await;
    a.expect(&[0x02, 0x18]).await;
    let last_activity = std::time::Instant::now();
    // Another source still gets in.
    let b = Sn::open_from(site.udp, "127.0.0.2:0").await;
    b.connect("b1", true, 60).await;
    b.send(&[0x02, 0x18]).await;
    b.expect(&[0x02, 0x18]).await;
    wait_committed(&site, "both sessions disconnected", |s| {
        ["a1", "a2"]
            .iter()
            .all(|id| saved_session(s, id).is_some_and(|v| v["state"] == "disconnected"))
    })
    .await;
    // Restored sessions still count against their source...
    site.gw.kill9();
    site.gw.start();
    site.wait_ready().await;
    a.send(&connect("a3", false, false, 60)).await;
    a.expect(&congestion).await;
    assert!(
        last_activity.elapsed() < expiry,
        "too slow for this test's session_expiry"
    );
    // ...until their expiry, counted from their last activity: here while the gateway is stopped.
    site.gw.kill9();
    tokio::time::sleep(
        expiry.saturating_sub(last_activity.elapsed()) + std::time::Duration::from_millis(500),
    )
    .await;
    site.gw.start();
    site.wait_ready().await;
    a.send(&connect("a3", false, false, 60)).await;
    a.expect(&accepted).await;
    wait_stats(&site, |s| s["counters"]["sessions_expired"] == 2).await;
    assert!(saved_session(&site, "a1").is_none() && saved_session(&site, "a2").is_none());
}

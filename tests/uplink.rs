//! The uplink's delivery across broken links: every committed row arrives, each row leaves the
//! outbox only on its own acknowledgement, and QoS 2 stays exactly-once across reconnects.

mod support;

#[path = "uplink/script.rs"]
mod script;

use std::collections::BTreeSet;
use std::time::Duration;

use script::*;
use support::*;

/// Seqs 1..=n that are missing from `got`.
fn missing(got: &BTreeSet<u64>, n: u64) -> Vec<u64> {
    (1..=n).filter(|s| !got.contains(s)).take(20).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_b_broker_gets_pubrels_resumed_and_no_row_is_taken_for_a_duplicate() {
    // Connection 1: 5 exchanges complete, then the PUBRELs are lost and the link is cut after
    // 15 PUBLISHes (within the 16 QoS 2 messages the uplink keeps in flight): 10 ids stay held
    // by the broker.
    let (port, broker) = method_b_broker(5, 15).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = site_yaml(free_port(), port, 2, 0, 50)
        .replace("  keepalive: 5s\n", "  keepalive: 5s\n  qos: 2\n");
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();

    let ok = wait_until(Duration::from_secs(30), || {
        let b = broker.lock().unwrap();
        b.log.len() >= 2 && b.delivered.keys().next_back().is_some_and(|&s| s >= 150)
    })
    .await;
    let b = broker.lock().unwrap();
    assert!(ok, "no second connection with progress\n{}", gw.log());
    assert!(!b.held_at_cut.is_empty(), "the script must leave ids held");

    // On the new connection, every id the broker held got its PUBREL before any new PUBLISH
    // reused it. (A PUBREC lost in the cut leaves the exchange before PUBREC on our side: it is
    // resumed with the PUBLISH marked DUP, which the broker answers as a duplicate, then PUBREL.)
    let second = &b.log[1];
    for id in &b.held_at_cut {
        let rel = second.iter().position(|&(k, p)| k == "PUBREL" && p == *id);
        let reuse = second.iter().position(|&(k, p)| k == "PUBLISH" && p == *id);
        assert!(
            rel.is_some(),
            "no PUBREL resent for held id {id}: {second:?}"
        );
        if let (Some(r), Some(u)) = (rel, reuse) {
            assert!(r < u, "id {id} published again before its PUBREL");
        }
    }
    // Every reading arrived, and none twice.
    let got: BTreeSet<u64> = b.delivered.keys().copied().collect();
    let target = 140;
    assert_eq!(
        missing(&got, target),
        Vec::<u64>::new(),
        "lost\n{}",
        gw.log()
    );
    let twice: Vec<u64> = b
        .delivered
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    drop(b);
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_qos_backlog_over_a_link_cut_six_times_arrives_whole_and_leaves_the_outbox() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start_at(
        mosquitto.port,
        "cuts-watch",
        "farm/gw1/#",
        true,
        rumqttc::QoS::ExactlyOnce,
    )
    .await;
    let proxy = CutProxy::start(mosquitto.port, false).await;
    let dir = tempfile::tempdir().unwrap();
    // Tank readings at QoS 2, temperatures at QoS 1, one window shared by both.
    let yaml = site_yaml(free_port(), proxy.port, 3, 1, 10).replace(
        "  keepalive: 5s\n",
        "  keepalive: 5s\n  max_inflight: 20\n  forward:\n    - {filter: \"farm/gw1/tank-1/#\", qos: 2}\n    - \"farm/gw1/#\"\n",
    );
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    // A backlog while the link is down.
    let db = gw.db_path();
    wait_for("a backlog of 1000 rows", Duration::from_secs(30), || {
        db.exists() && committed_seqs(&db).len() >= 1000
    })
    .await;
    proxy.set_up(true);
    for _ in 0..6 {
        tokio::time::sleep(SHORT).await;
        proxy.cut();
    }
    let target = committed_seqs(&db).last().copied().unwrap_or(0) + 200;
    let arrived = up.wait_gapless(target, Duration::from_secs(60)).await;
    if let Err(missing) = arrived {
        panic!("lost (first 20): {missing:?}\n{}", gw.log());
    }
    // Every delivered row has left the outbox (none is stuck holding a window slot).
    let left = wait_until(Duration::from_secs(20), || {
        committed_seqs(&db).first().is_none_or(|&s| s > target)
    })
    .await;
    assert!(
        left,
        "rows up to {target} still in the outbox: {:?}",
        committed_seqs(&db).iter().take(10).collect::<Vec<_>>()
    );
    // QoS 2 readings arrived exactly once.
    let mut seen = BTreeSet::new();
    // A message Mosquitto sends the subscriber again after the subscriber's own reconnect is
    // marked DUP; a second delivery of the gateway's doing would not be.
    let dups: Vec<u64> = up
        .snapshot()
        .iter()
        .filter(|m| m.topic.starts_with("farm/gw1/tank-1/") && !m.topic.ends_with("/status"))
        .filter_map(|m| Some((m.json()["seq"].as_u64()?, m.dup)))
        .filter(|&(s, dup)| !seen.insert(s) && !dup)
        .map(|(s, _)| s)
        .collect();
    assert!(dups.is_empty(), "QoS 2 readings delivered twice: {dups:?}");
    assert!(seen.len() > 100, "only {} QoS 2 readings", seen.len());
    let cuts = gw.log().matches("uplink connected").count();
    assert!(
        cuts >= 4,
        "the link was cut only {cuts} times\n{}",
        gw.log()
    );
    gw.terminate();
}

/// Publishes `payloads` at QoS 1 to the local broker as an on-site client would, and waits for
/// every PUBACK (the gateway acknowledges once the outbox has committed them).
async fn publish_on_site(local: u16, payloads: Vec<(String, Vec<u8>)>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut opts = MqttOptions::new("plc", "127.0.0.1", local);
    opts.set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let n = payloads.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in payloads {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < n {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) | Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("on-site client: {e}"),
            Err(_) => panic!("only {acked} of {n} on-site publishes acknowledged"),
        }
    }
    drop(sender.await);
}

fn blob(i: usize, size: usize) -> (String, Vec<u8>) {
    let pad = "x".repeat(size);
    (
        format!("farm/gw1/blob/{i}"),
        format!("{{\"n\":{i},\"pad\":\"{pad}\"}}").into_bytes(),
    )
}

fn blobs_received(up: &Subscriber) -> BTreeSet<u64> {
    up.snapshot()
        .iter()
        .filter(|m| m.topic.starts_with("farm/gw1/blob/"))
        .filter_map(|m| m.json()["n"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_on_a_half_open_link_are_each_deleted_only_by_their_own_ack() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "blob-watch", "farm/gw1/blob/#", true).await;
    let proxy = FreezableProxy::start(mosquitto.port).await;
    let dir = tempfile::tempdir().unwrap();
    let local = free_port();
    let yaml = site_yaml(local, proxy.port, 1, 0, 200)
        .replace("uplink:\n", "  max_packet_size: 1MiB\nuplink:\n")
        .replace("  keepalive: 5s\n", "  keepalive: 2s\n");
    let yaml = with_failover(&yaml, mosquitto.port);
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    wait_for("the uplink", Duration::from_secs(20), || {
        gw.log().contains("uplink connected")
    })
    .await;
    publish_on_site(local, (0..10).map(|i| blob(i, 200_000)).collect()).await;
    wait_for("the first blobs upstream", Duration::from_secs(20), || {
        !blobs_received(&up).is_empty()
    })
    .await;
    // The link dies without a FIN while large rows are in flight; more follow.
    proxy.freeze();
    publish_on_site(local, (10..30).map(|i| blob(i, 200_000)).collect()).await;
    let all: BTreeSet<u64> = (0..30).collect();
    let arrived = wait_until(Duration::from_secs(60), || blobs_received(&up) == all).await;
    let got = blobs_received(&up);
    assert!(
        arrived,
        "lost: {:?}\n{}",
        all.difference(&got).collect::<Vec<_>>(),
        gw.log()
    );
    assert!(gw
        .log()
        .contains(&format!("uplink connected to 127.0.0.1:{}", mosquitto.port)));
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_slower_to_send_than_any_fixed_timeout_goes_through_a_slow_link() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "slow-watch", "farm/gw1/blob/#", true).await;
    // 100 kB/s upstream: the 700 kB message takes about 7 s, longer than a flush timeout of 5 s.
    let proxy = FreezableProxy::start_throttled(mosquitto.port, Some(100_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let local = free_port();
    let yaml = site_yaml(local, proxy.port, 1, 0, 1000)
        .replace("uplink:\n", "  max_packet_size: 1MiB\nuplink:\n")
        .replace("  keepalive: 5s\n", "  keepalive: 30s\n");
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    wait_for("the uplink", Duration::from_secs(20), || {
        gw.log().contains("uplink connected")
    })
    .await;
    publish_on_site(local, vec![blob(1, 700_000), blob(2, 100)]).await;
    let both: BTreeSet<u64> = [1, 2].into();
    let arrived = wait_until(Duration::from_secs(40), || blobs_received(&up) == both).await;
    assert!(arrived, "got {:?}\n{}", blobs_received(&up), gw.log());
    assert!(
        !gw.log().contains("lost"),
        "the link was given up\n{}",
        gw.log()
    );
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_broker_that_claims_a_session_gets_the_open_rows_as_new_messages() {
    // The primary takes QoS 2 messages up to PUBREC, loses the PUBRELs, is cut, and never takes
    // us back: its messages wait for PUBRELs that only it could use.
    let first = Script {
        refuse_after_first: true,
        ..Script::default()
    };
    let (primary, a) = scripted_broker(0, 10, first).await;
    // The failover broker says session present from its first CONNACK.
    let second = Script {
        session_on_first: true,
        ..Script::default()
    };
    let (failover, b) = scripted_broker(usize::MAX, usize::MAX, second).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = site_yaml(free_port(), primary, 2, 0, 50)
        .replace("  keepalive: 5s\n", "  keepalive: 5s\n  qos: 2\n");
    let yaml = with_failover(&yaml, failover);
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    let held: Vec<u64> = {
        let ok = wait_until(Duration::from_secs(30), || {
            !a.lock().unwrap().held_at_cut.is_empty()
        })
        .await;
        assert!(ok, "the primary was never cut\n{}", gw.log());
        a.lock().unwrap().delivered.keys().copied().collect()
    };
    // Every reading the primary took but could not deliver (no PUBREL) arrives at the
    // failover broker, which was sent PUBLISHes for them, not PUBRELs.
    let ok = wait_until(Duration::from_secs(30), || {
        let b = b.lock().unwrap();
        held.iter().all(|s| b.delivered.contains_key(s))
    })
    .await;
    let b = b.lock().unwrap();
    assert!(
        ok,
        "readings only the primary holds: {held:?}, failover got {:?}\n{}",
        b.delivered.keys().take(20).collect::<Vec<_>>(),
        gw.log()
    );
    let first_conn = &b.log[0];
    assert!(
        first_conn
            .iter()
            .take_while(|(k, _)| *k == "PUBREL")
            .count()
            == 0,
        "PUBRELs for another broker's exchanges: {first_conn:?}"
    );
    drop(b);
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_message_is_not_sent_again_when_the_slow_replay_reaches_it() {
    // A backlog of QoS 1 readings builds while the broker refuses us. Connection 1 replays it at
    // 50/s; meanwhile a PLC's messages go live at QoS 2, are delivered and held unanswered, and
    // the link is cut. Connection 2 resumes them (DUP), they complete at once, and they are now
    // part of its backlog: the replay, seconds later, must skip them, not send them as new.
    let script = Script {
        accept_after: Duration::from_millis(1500),
        silent_qos2_first: true,
        ..Script::default()
    };
    let (port, broker) = scripted_broker(usize::MAX, 5, script).await;
    let dir = tempfile::tempdir().unwrap();
    let local = free_port();
    let yaml = site_yaml(local, port, 2, 0, 20).replace(
        "  keepalive: 5s\n",
        "  keepalive: 5s\n  replay_rate: 50\n  forward:\n    - {filter: \"farm/gw1/plc/#\", qos: 2}\n    - \"farm/gw1/#\"\n",
    );
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    let connected = wait_until(Duration::from_secs(20), || {
        gw.log().contains("uplink connected")
    })
    .await;
    assert!(connected, "never connected\n{}", gw.log());
    let plc: Vec<(String, Vec<u8>)> = (1..=5u64)
        .map(|i| {
            let seq = 1_000_000 + i;
            (
                "farm/gw1/plc/setpoint".into(),
                format!("{{\"seq\":{seq}}}").into_bytes(),
            )
        })
        .collect();
    publish_on_site(local, plc).await;
    let plc_seqs: Vec<u64> = (1_000_001..=1_000_005).collect();
    // Connection 2 drains the backlog that now holds the PLC's messages.
    let drained = wait_until(Duration::from_secs(40), || {
        gw.log().matches("uplink connected").count() >= 2 && gw.log().contains("delivered backlog")
    })
    .await;
    assert!(drained, "backlog not delivered\n{}", gw.log());
    let b = broker.lock().unwrap();
    let counts: Vec<u32> = plc_seqs
        .iter()
        .map(|s| b.delivered.get(s).copied().unwrap_or(0))
        .collect();
    assert_eq!(
        counts,
        vec![1; 5],
        "deliveries of each PLC message; connection 2 sent {:?}\n{}",
        b.log.get(1),
        gw.log()
    );
    drop(b);
    gw.terminate();
}

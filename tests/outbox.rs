//! Store-and-forward: caps, and the field-debugging commands, through the real binary.

#[path = "outbox/disk_full.rs"]
mod disk_full;
mod support;
#[path = "outbox/write_behind.rs"]
mod write_behind;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;

fn buffer(cmd: &str, gw: &Gateway) -> (Option<i32>, String, String) {
    let out = gateway_command()
        .args(["buffer", cmd, "--config"])
        .arg(&gw.config)
        .current_dir(&gw.dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_cap_drops_oldest_telemetry_keeps_alarms_and_counts_match() {
    let dir = tempfile::tempdir().unwrap();
    // No broker upstream: everything stays in the buffer, capped at 100 rows.
    let local = free_port();
    let yaml = site_yaml(local, free_port(), 3, 2, 20);
    let yaml = yaml.replace(
        "  commit_interval: 50ms\n",
        "  commit_interval: 50ms\n  max_rows: 100\n",
    );
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    // 250 readings/s: the cap is hit within half a second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for("drops", Duration::from_secs(10), || {
        let (_, out, _) = buffer("stats", &gw);
        out.contains("max_rows")
    })
    .await;
    // Works while the gateway runs.
    let (code, out, err) = buffer("stats", &gw);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("messages: "), "{out}");
    let (code, _, err) = buffer("export", &gw);
    assert_eq!(code, Some(0), "{err}");
    wait_for("the drop warning", Duration::from_secs(5), || {
        gw.log().contains("buffer full: dropped the")
    })
    .await;
    // The drops are on the gateway's status topic too, retained, per reason and device.
    let status = Subscriber::start(local, "drops-watch", "farm/gw1/status/drops", false).await;
    wait_for("drops on the status topic", Duration::from_secs(15), || {
        !status.snapshot().is_empty()
    })
    .await;
    let reported = status.snapshot()[0].json();
    let per_device = reported["dropped"]["max_rows"].as_object().unwrap().clone();
    assert!(
        per_device
            .keys()
            .all(|d| d.starts_with("temp-") || d.starts_with("tank-")),
        "{reported}"
    );
    let reported_total = reported["total"].as_u64().unwrap();
    assert!(reported_total > 0, "{reported}");
    assert_eq!(
        per_device
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>(),
        reported_total
    );

    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
    let (_, out, _) = buffer("export", &gw);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The cap holds for telemetry; alarms (statuses, drop reports) may go past it.
    let telemetry = rows.iter().filter(|r| r["class"] == "telemetry").count();
    let alarm_rows = rows.len() - telemetry;
    assert!(
        rows.len() <= 100 + alarm_rows && telemetry <= 100,
        "{}",
        rows.len()
    );
    let alarms: Vec<&serde_json::Value> = rows.iter().filter(|r| r["class"] == "alarm").collect();
    let devices: BTreeSet<&str> = alarms
        .iter()
        .filter(|r| r["topic"].as_str().unwrap().ends_with("/status"))
        .filter_map(|r| r["device"].as_str())
        .collect();
    assert_eq!(
        devices.len(),
        5,
        "every device's online status stays: {alarms:?}"
    );
    assert!(
        alarms.iter().any(|r| r["topic"] == "farm/gw1/status/drops"),
        "the drop report itself is an alarm, kept for upstream: {alarms:?}"
    );
    let seqs: Vec<u64> = rows
        .iter()
        .filter(|r| r["class"] == "telemetry")
        .map(|r| {
            let p: serde_json::Value =
                serde_json::from_str(r["payload"].as_str().unwrap()).unwrap();
            p["seq"].as_u64().unwrap()
        })
        .collect();
    let newest = *seqs.last().unwrap();
    let kept: Vec<u64> = (newest + 1 - seqs.len() as u64..=newest).collect();
    assert_eq!(seqs, kept, "what stays is the newest telemetry, in order");

    // Every reading produced is either still buffered or counted as dropped.
    let (_, stats, _) = buffer("stats", &gw);
    let dropped: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("dropped:  "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop count in:\n{stats}"));
    assert_eq!(dropped + seqs.len() as u64, newest, "{stats}");
    assert!(reported_total <= dropped, "{reported} vs {stats}");
    assert!(
        stats
            .lines()
            .any(|l| l.trim_start().starts_with("max_rows")),
        "{stats}"
    );
}

#[test]
fn buffer_commands_say_where_they_looked_when_there_is_no_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::new(dir.path(), &site_yaml(free_port(), free_port(), 1, 0, 100));
    let (code, _, err) = buffer("stats", &gw);
    assert_eq!(code, Some(1));
    assert!(err.contains("no buffer at data/edgegate.db"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_committed() {
    let upstream_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // 500 readings/s across 5 devices.
    let mut gw = Gateway::new(dir.path(), &site_yaml(free_port(), upstream_port, 3, 2, 10));
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut committed = BTreeSet::new();
    let kill = |gw: &mut Gateway, committed: &mut BTreeSet<u64>, ms: u64| {
        gw.start();
        std::thread::sleep(Duration::from_millis(ms));
        gw.kill9();
        // committed_seqs also checks PRAGMA integrity_check.
        committed.extend(committed_seqs(&gw.db_path()));
    };
    // First under load with the broker down, so a backlog builds up...
    for _ in 0..10 {
        let ms = rng.u64(150..700);
        kill(&mut gw, &mut committed, ms);
    }
    assert!(committed.len() > 500, "only {} committed", committed.len());
    // ...then with the broker up, killed while that backlog is being replayed.
    let mosquitto = Mosquitto::start_on(upstream_port);
    let up = Subscriber::start(mosquitto.port, "crash-watch", "farm/gw1/#", true).await;
    for _ in 0..12 {
        let ms = rng.u64(50..400);
        kill(&mut gw, &mut committed, ms);
    }
    gw.start();
    let delivered = wait_until(Duration::from_secs(60), || committed.is_subset(&up.seqs())).await;
    let missing: Vec<u64> = committed.difference(&up.seqs()).copied().take(20).collect();
    assert!(
        delivered,
        "committed but never delivered (first 20): {missing:?}"
    );
    births_mark_each_run(&up).await;
    gw.terminate();
}

/// Each run's birth says where its sequence numbers start: births strictly increase, a live
/// reading that arrives after a birth is of that run or a later one, and the last run's first
/// reading carries its birth's seq.
async fn births_mark_each_run(up: &Subscriber) {
    let birth = |m: &Received| {
        (m.topic == "farm/gw1/status" && m.status() == "online")
            .then(|| m.json()["seq"].as_u64())
            .flatten()
    };
    let mut last = None;
    wait_until(Duration::from_secs(30), || {
        last = up.snapshot().iter().rev().find_map(birth);
        last.is_some_and(|b| up.seqs().contains(&b))
    })
    .await;
    let last = last.expect("no birth upstream");
    assert_eq!(
        up.seqs().range(last..).next(),
        Some(&last),
        "the last run's first reading carries its birth's seq"
    );
    let mut run = None;
    for m in up.snapshot() {
        if let Some(b) = birth(&m) {
            assert!(run.is_none_or(|r| b > r), "birth {b} after {run:?}");
            run = Some(b);
            continue;
        }
        if m.topic.ends_with("/status") || m.topic.ends_with("/drops") {
            continue;
        }
        let v = m.json();
        if v["replay"] == true {
            continue;
        }
        let (Some(seq), Some(r)) = (v["seq"].as_u64(), run) else {
            continue;
        };
        assert!(seq >= r, "live reading {seq} after the birth of run {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_is_detected_and_failover_resends_the_dead_window() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "halfopen-watch", "farm/gw1/#", true).await;
    let proxy = FreezableProxy::start(mosquitto.port).await;
    let dir = tempfile::tempdir().unwrap();
    // Primary: through the proxy; failover: the same broker directly.
    let yaml = site_yaml(free_port(), proxy.port, 3, 2, 20)
        .replace("  keepalive: 5s\n", "  keepalive: 2s\n");
    let yaml = with_failover(&yaml, mosquitto.port);
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    wait_for(
        "readings through the proxy",
        Duration::from_secs(20),
        || up.seqs().len() >= 50,
    )
    .await;

    proxy.freeze();
    let frozen_at = std::time::Instant::now();
    let at_freeze = *up.seqs().last().unwrap();
    let failover = format!("uplink connected to 127.0.0.1:{}", mosquitto.port);
    wait_for(
        "reconnect through the failover broker",
        Duration::from_secs(15),
        || gw.log().contains(&failover),
    )
    .await;
    let took = frozen_at.elapsed();
    // 1.5x keepalive, plus the reconnect backoff and a loaded machine's slack.
    assert!(
        took < Duration::from_millis(3_000 + 500 + 1_500),
        "detected after {took:?}"
    );

    // Everything sent into the dead window was still in the outbox and arrives now.
    let arrived = up
        .wait_gapless(at_freeze + 250, Duration::from_secs(20))
        .await;
    if let Err(missing) = arrived {
        panic!(
            "lost after the half-open link (first 20): {missing:?}\n{}",
            gw.log()
        );
    }
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_replays_at_its_rate_while_live_readings_go_first() {
    if emulated() {
        eprintln!("skipped under emulation: asserts native message rates");
        return;
    }
    let upstream_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = site_yaml(free_port(), upstream_port, 3, 2, 10).replace(
        "  reconnect_max: 500ms\n",
        "  reconnect_max: 500ms\n  replay_rate: 200\n",
    );
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    // No broker for 3 s at 500 readings/s: a backlog of ~1500.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mosquitto = Mosquitto::start_on(upstream_port);
    let up = Subscriber::start(mosquitto.port, "replay-watch", "farm/gw1/#", true).await;
    let connected = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let got = up.snapshot();
    let readings: Vec<(serde_json::Value, std::time::SystemTime)> = got
        .iter()
        .filter(|m| !m.topic.ends_with("/status"))
        .map(|m| (m.json(), m.at))
        .collect();
    let replays = readings.iter().filter(|(v, _)| v["replay"] == true).count();
    let live: Vec<_> = readings
        .iter()
        .filter(|(v, _)| v["replay"] != true)
        .collect();
    // 200/s plus a one-second burst over ~3 s, with slack for the connect.
    assert!(replays >= 300, "replay too slow or not marked: {replays}");
    assert!(
        replays <= 200 * 4 + 200,
        "replay not rate-limited: {replays} in ~3 s"
    );
    assert!(
        live.len() >= 1000,
        "live readings held back: {}",
        live.len()
    );
    for (v, at) in &live {
        let ts = humantime::parse_rfc3339(v["ts"].as_str().unwrap()).unwrap();
        if ts < connected {
            continue;
        }
        let late = at.duration_since(ts).unwrap_or_default();
        assert!(
            late < Duration::from_secs(1),
            "a live reading waited {late:?}: {v}"
        );
    }
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_that_lost_the_session_gets_everything_again_from_the_outbox() {
    let mut mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "nosession-watch", "farm/gw1/#", false).await;
    let dir = tempfile::tempdir().unwrap();
    // The gateway waits 1 to 2 s before reconnecting, so the test's subscriber is back first.
    let yaml = site_yaml(free_port(), mosquitto.port, 3, 2, 10)
        .replace("  reconnect_min: 100ms\n", "  reconnect_min: 2s\n")
        .replace("  reconnect_max: 500ms\n", "  reconnect_max: 2s\n");
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    wait_for("readings", Duration::from_secs(20), || {
        up.seqs().len() >= 200
    })
    .await;

    // The broker dies with QoS 1 messages in flight and comes back with no session at all.
    mosquitto.kill9();
    let before = *up.seqs().last().unwrap();
    mosquitto.restart();
    wait_for(
        "the gateway back on a fresh session",
        Duration::from_secs(15),
        || {
            gw.log().contains("session_present=false")
                && gw.log().matches("uplink connected").count() >= 2
        },
    )
    .await;
    let arrived = up.wait_gapless(before + 500, Duration::from_secs(20)).await;
    if let Err(missing) = arrived {
        panic!(
            "lost with the broker's session (first 20): {missing:?}\n{}",
            gw.log()
        );
    }
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_sets_its_qos_upstream_and_qos_2_rows_leave_on_pubcomp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let sub = Subscriber::start_at(
        broker.port,
        "qos-watch",
        "farm/#",
        false,
        rumqttc::QoS::ExactlyOnce,
    )
    .await;
    let yaml = site_yaml(free_port(), broker.port, 1, 1, 50).replace(
        "  reconnect_max: 500ms\n",
        "  reconnect_max: 500ms\n  forward:\n    - {filter: farm/gw1/temp-1/#, qos: 2}\n    - \"farm/#\"\n",
    );
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    let count = |device: &str| {
        sub.snapshot()
            .iter()
            .filter(|r| r.topic.starts_with(&format!("farm/gw1/{device}/")))
            .count()
    };
    wait_for("readings of both devices", Duration::from_secs(20), || {
        count("temp-1") >= 20 && count("tank-1") >= 20
    })
    .await;
    let got = sub.snapshot();
    let qos_of = |device: &str| -> BTreeSet<u8> {
        got.iter()
            .filter(|r| r.topic.starts_with(&format!("farm/gw1/{device}/")))
            .map(|r| r.qos)
            .collect()
    };
    assert_eq!(
        qos_of("temp-1"),
        BTreeSet::from([2]),
        "the first route is QoS 2"
    );
    assert_eq!(
        qos_of("tank-1"),
        BTreeSet::from([1]),
        "the catch-all is QoS 1"
    );

    // Rows are deleted on PUBCOMP: what upstream had a second ago is gone from the buffer.
    let delivered: BTreeSet<u64> = got
        .iter()
        .filter(|r| r.topic == "farm/gw1/temp-1/temperature")
        .map(|r| r.json()["seq"].as_u64().unwrap())
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
    let left = committed_seqs(&gw.db_path());
    let stuck: Vec<&u64> = delivered.intersection(&left).collect();
    assert!(stuck.is_empty(), "QoS 2 rows never deleted: {stuck:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_outage_at_250_readings_per_second_loses_nothing() {
    let mut mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "long-outage", "farm/gw1/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    // 5 devices every 20 ms: 250 readings/s.
    let mut gw = Gateway::new(
        dir.path(),
        &site_yaml(free_port(), mosquitto.port, 3, 2, 20),
    );
    gw.start();
    wait_for("first readings upstream", Duration::from_secs(20), || {
        up.seqs().len() >= 50
    })
    .await;
    mosquitto.stop();
    let before = *up.seqs().last().unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    mosquitto.restart();

    // 20 s at 250/s: about 5000 readings were produced while upstream was away.
    if let Err(missing) = up
        .wait_gapless(before + 4500, Duration::from_secs(60))
        .await
    {
        panic!("lost readings (first 20): {missing:?}\n{}", gw.log());
    }
    for ((device, replay), order) in up.first_arrivals_by_stream() {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{device} (replay: {replay}) out of order"
        );
    }
    // A duplicate is a resend of the same reading, never a new reading under an old number.
    let mut first: std::collections::BTreeMap<u64, (String, serde_json::Value)> =
        Default::default();
    let mut duplicates = 0;
    for m in up.snapshot() {
        if m.topic.ends_with("/status") {
            continue;
        }
        let mut v = m.json();
        v.as_object_mut().unwrap().remove("replay");
        let seq = v["seq"].as_u64().unwrap();
        match first.get(&seq) {
            None => {
                first.insert(seq, (m.topic.clone(), v));
            }
            Some(seen) => {
                duplicates += 1;
                assert_eq!(seen, &(m.topic.clone(), v), "seq {seq} reused");
            }
        }
    }
    println!(
        "{} readings, {duplicates} duplicates, outage from seq {before}",
        first.len()
    );
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_slow_link_live_readings_wait_behind_the_replay_no_longer_than_the_bound() {
    let mut mosquitto = Mosquitto::start();
    mosquitto.stop();
    // ~96 KB/s upstream: a backlog window of 2000 readings (~240 KB) would hold a live reading
    // for over 2 s; live_max_delay 200ms must keep it far below that.
    let proxy = FreezableProxy::start_throttled(mosquitto.port, Some(96_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = site_yaml(free_port(), proxy.port, 4, 0, 20).replace(
        "  reconnect_max: 500ms\n",
        "  reconnect_max: 500ms\n  max_inflight: 2000\n  live_max_delay: 200ms\n",
    );
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    // 8 s without upstream at 200 readings/s: a backlog of ~1600.
    tokio::time::sleep(Duration::from_secs(8)).await;
    mosquitto.restart();
    let up = Subscriber::start(mosquitto.port, "slow-link", "farm/gw1/+/temperature", true).await;
    let restarted = std::time::SystemTime::now();
    wait_for(
        "the backlog through the slow link",
        Duration::from_secs(30),
        || gw.log().contains("delivered backlog of"),
    )
    .await;
    let got = up.snapshot();
    let last_replay = got
        .iter()
        .filter(|m| m.json()["replay"] == true)
        .map(|m| m.at)
        .max()
        .expect("a replay happened");
    // Live readings taken while the backlog was still going up, and how long each took.
    let mut waits: Vec<f64> = got
        .iter()
        .filter(|m| m.json()["replay"] != true)
        .filter_map(|m| {
            let ts = humantime::parse_rfc3339(m.json()["ts"].as_str().unwrap()).unwrap();
            (ts >= restarted && ts <= last_replay)
                .then(|| m.at.duration_since(ts).unwrap_or_default().as_secs_f64())
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    assert!(
        waits.len() >= 20,
        "too few live readings during the drain: {}",
        waits.len()
    );
    let p90 = waits[waits.len() * 9 / 10];
    println!(
        "{} live readings during the drain, p90 wait {p90:.3}s",
        waits.len()
    );
    assert!(
        p90 < 1.0,
        "live readings waited {p90:.2}s (p90) behind the replay; all: {waits:?}"
    );
    gw.terminate();
}

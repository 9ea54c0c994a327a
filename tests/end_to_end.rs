//! The gateway end to end on a simulated site, against a real Mosquitto upstream.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::*;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.yaml");

#[test]
fn demo_config_passes_check() {
    let out = gateway_command()
        .args(["check", "--config", DEMO])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok"), "{stdout}");
}

#[test]
fn check_reports_every_problem_with_line_and_column_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "site: farm\n\
         gateway: gw1\n\
         brokr:\n\
         \x20 listen: 127.0.0.1:1883\n\
         uplink:\n\
         \x20 host: 127.0.0.1\n\
         \x20 host: 127.0.0.2\n\
         \x20 keepalive: 5 sec\n",
    )
    .unwrap();
    let out = gateway_command()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = path.display().to_string();
    for (line, col, words) in [(3, 1, "brokr"), (7, 3, "duplicate key"), (8, 14, "5 sec")] {
        let prefix = format!("{file}:{line}:{col}: ");
        let hit = stderr.lines().find(|l| l.starts_with(&prefix));
        let hit = hit.unwrap_or_else(|| panic!("no problem reported at {line}:{col}:\n{stderr}"));
        assert!(hit.contains(words), "{hit}");
    }
    assert!(stderr.contains("did you mean `broker`"), "{stderr}");
}

#[test]
fn run_with_an_invalid_config_exits_2_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "site: farm\n").unwrap();
    let out = gateway_command()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_appear_retained_on_the_local_bus_and_upstream() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "upstream-watch", "farm/#", false).await;
    let local_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::new(
        dir.path(),
        &site_yaml(local_port, mosquitto.port, 3, 2, 100),
    );
    gw.start();

    wait_for("readings upstream", Duration::from_secs(20), || {
        up.seqs().len() >= 20
    })
    .await;
    let upstream = up.snapshot();
    let reading = upstream
        .iter()
        .find(|m| m.topic == "farm/gw1/temp-1/temperature")
        .expect("temp-1 reading upstream");
    let v = reading.json();
    assert_eq!(v["unit"], "degC");
    assert_eq!(v["quality"], "good");
    assert!(
        v["value"]
            .as_f64()
            .is_some_and(|t| (-10.0..20.0).contains(&t)),
        "{v}"
    );
    assert!(
        v["ts"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{v}"
    );
    assert!(upstream
        .iter()
        .any(|m| m.topic == "farm/gw1/status" && m.status() == "online"));

    // A subscriber that arrives late gets the last value of every sensor, retained.
    let local = Subscriber::start(local_port, "screen", "#", false).await;
    let topics: BTreeSet<String> = [
        "temp-1/temperature",
        "temp-2/temperature",
        "temp-3/temperature",
        "tank-1/level",
        "tank-2/level",
    ]
    .iter()
    .map(|t| format!("farm/gw1/{t}"))
    .collect();
    wait_for(
        "retained values of all 5 sensors",
        Duration::from_secs(5),
        || {
            let got: BTreeSet<String> = local
                .snapshot()
                .into_iter()
                .filter(|m| m.retain)
                .map(|m| m.topic)
                .collect();
            topics.is_subset(&got)
        },
    )
    .await;
    let level = local
        .snapshot()
        .into_iter()
        .find(|m| m.topic == "farm/gw1/tank-1/level")
        .unwrap()
        .json();
    assert_eq!(level["unit"], "%");
    assert!(
        level["value"]
            .as_f64()
            .is_some_and(|l| (0.0..=100.0).contains(&l)),
        "{level}"
    );

    // What the README tells people to run shows live values.
    let port = local_port.to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "#",
        "-v",
        "-C",
        "10",
        "-W",
        "10",
    ];
    let out = Command::new(find_program("mosquitto_sub", "mosquitto-clients"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 10, "{text}");
    for line in text.lines() {
        let (topic, payload) = line.split_once(' ').unwrap_or((line, ""));
        assert!(topic.starts_with("farm/gw1/"), "{line}");
        if topic.ends_with("/status") {
            assert_eq!(payload, "online", "{line}");
        } else {
            assert!(payload.contains("\"seq\":"), "{line}");
        }
    }

    let (code, took) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let log = gw.log();
    assert!(
        log.contains("local broker listening on 127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("uplink connected"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_keeps_order() {
    let mut mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "outage-watch", "farm/gw1/#", true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::new(
        dir.path(),
        &site_yaml(free_port(), mosquitto.port, 3, 2, 50),
    );
    gw.start();
    wait_for("first readings upstream", Duration::from_secs(20), || {
        up.seqs().len() >= 20
    })
    .await;

    mosquitto.stop();
    let before = *up.seqs().last().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for(
        "the gateway to say it is buffering",
        Duration::from_secs(5),
        || gw.log().contains("buffering"),
    )
    .await;
    mosquitto.restart();

    // ~100 readings/s for 3 s were produced during the outage; all of them must arrive, and
    // the first reading of a new gateway has seq 1.
    if let Err(missing) = up.wait_gapless(before + 200, Duration::from_secs(30)).await {
        panic!("lost readings (first 20): {missing:?}\n{}", gw.log());
    }
    for ((device, replay), order) in up.first_arrivals_by_stream() {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{device} (replay: {replay}) out of order: {order:?}"
        );
    }
    // What was produced during the outage came back as a marked replay.
    let replayed = up.replayed();
    let outage: Vec<u64> = (before + 20..before + 200).collect();
    assert!(
        outage.iter().all(|s| replayed.contains(s)),
        "outage readings not marked as replay"
    );
    wait_for("the backlog log line", Duration::from_secs(10), || {
        gw.log().contains("delivered backlog of")
    })
    .await;
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_survives_kill_9_and_is_delivered_after_restart() {
    let upstream_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::new(dir.path(), &site_yaml(free_port(), upstream_port, 3, 2, 50));
    gw.start();
    // No broker yet: everything is buffered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.kill9();
    let committed = committed_seqs(&gw.db_path());
    assert!(
        committed.len() >= 50,
        "only {} readings committed in 2 s",
        committed.len()
    );

    let mosquitto = Mosquitto::start_on(upstream_port);
    let up = Subscriber::start(mosquitto.port, "crash-watch", "farm/gw1/#", true).await;
    gw.start();
    wait_for(
        "every committed reading upstream",
        Duration::from_secs(30),
        || committed.is_subset(&up.seqs()),
    )
    .await;
    // Numbering continues after the crash instead of starting again.
    let max_committed = *committed.last().unwrap();
    wait_for(
        "new readings after the restart",
        Duration::from_secs(10),
        || up.seqs().last().is_some_and(|&s| s > max_committed + 10),
    )
    .await;
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_announces_a_killed_gateway_and_birth_replaces_it() {
    let mosquitto = Mosquitto::start();
    let status = Subscriber::start(mosquitto.port, "status-watch", "farm/gw1/status", false).await;
    let texts = |s: &Subscriber| {
        s.snapshot()
            .into_iter()
            .map(|m| m.status())
            .collect::<Vec<_>>()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::new(
        dir.path(),
        &site_yaml(free_port(), mosquitto.port, 1, 0, 200),
    );
    gw.start();
    wait_for("birth", Duration::from_secs(20), || {
        texts(&status) == ["online"]
    })
    .await;

    gw.kill9();
    wait_for("will", Duration::from_secs(15), || {
        texts(&status) == ["online", "offline"]
    })
    .await;

    gw.start();
    wait_for("birth again", Duration::from_secs(20), || {
        texts(&status) == ["online", "offline", "online"]
    })
    .await;
    let late = Subscriber::start(mosquitto.port, "late-status", "farm/gw1/status", false).await;
    wait_for("retained status", Duration::from_secs(5), || {
        !late.snapshot().is_empty()
    })
    .await;
    let retained = late.snapshot();
    assert!(
        retained[0].retain && retained[0].status() == "online",
        "{retained:?}"
    );

    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0));
    wait_for("offline on clean shutdown", Duration::from_secs(5), || {
        texts(&status).last().map(String::as_str) == Some("offline")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_the_caps_count_as_dropped_is_never_also_delivered() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "caps-watch", "farm/gw1/#", true).await;
    // ~100 readings/s get through; 250/s are made, at most 300 buffered: the cap drops all the
    // time while the uplink holds rows it has read ahead.
    let proxy = FreezableProxy::start_throttled(mosquitto.port, Some(15_000)).await;
    let upstream_port = proxy.port;
    let local_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = site_yaml(local_port, upstream_port, 3, 2, 20).replace(
        "  commit_interval: 50ms\n",
        "  commit_interval: 50ms\n  max_rows: 300\n",
    );
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    let local = Subscriber::start(local_port, "screen", "farm/gw1/+/+", false).await;
    wait_for("readings upstream", Duration::from_secs(30), || {
        up.seqs().len() >= 400
    })
    .await;
    // No more readings: a site without devices, so every reading made has been seen.
    let idle = site_yaml(local_port, upstream_port, 0, 0, 10).replace(
        "  commit_interval: 50ms\n",
        "  commit_interval: 50ms\n  max_rows: 300\n",
    );
    std::fs::write(&gw.config, idle).unwrap();
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(gw.pid().unwrap().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("reloaded", Duration::from_secs(10), || {
        gw.log().contains("reloaded: 0 devices")
    })
    .await;
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());

    let delivered = up.seqs();
    let buffered = committed_seqs(&gw.db_path());
    let kept: BTreeSet<u64> = delivered.union(&buffered).copied().collect();
    // Numbered from 1 without gaps; the local bus saw the last one.
    let produced = local.seqs().last().max(kept.last()).copied().unwrap_or(0);
    let out = gateway_command()
        .args(["buffer", "stats", "--config"])
        .arg(&gw.config)
        .current_dir(&gw.dir)
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout).into_owned();
    let dropped: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("dropped:  "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop count in:\n{stats}"));
    assert!(dropped > 0, "the cap never dropped anything:\n{stats}");
    assert_eq!(
        kept.len() as u64 + dropped,
        produced,
        "delivered or buffered {}, counted as dropped {dropped}, produced {produced}",
        kept.len(),
    );
}

//! On the Pi: the systemd unit, readiness and watchdog over a real notify socket, `/metrics`
//! and `/healthz`, and config reload on SIGHUP.

#[path = "deploy/doctor.rs"]
mod doctor;
#[path = "deploy/gw.rs"]
mod gw;
#[path = "deploy/reload.rs"]
mod reload;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gw::{http_get, metric, scrape, Gw, NotifySocket};
use support::{find_program, free_port, wait_for, Mosquitto, BIN};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/edgegate.service");

/// A site with `devices` sim temperature sensors every `interval`, a health endpoint, and an
/// uplink to `uplink_port` (a broker may or may not run there).
fn site(broker: u16, health: u16, uplink: u16, devices: &[&str], interval: &str) -> String {
    let mut y = format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{broker}\nuplink:\n  host: 127.0.0.1\n  port: {uplink}\n  keepalive: 5s\n  reconnect_min: 100ms\n  reconnect_max: 300ms\nbuffer:\n  dir: data\n  commit_interval: 50ms\n  max_rows: 100\nhealth:\n  listen: 127.0.0.1:{health}\n  uplink_grace: 3s\ndevices:\n"
    );
    for d in devices {
        y += &format!("  {d}:\n    sim:\n      kind: temperature\n      interval: {interval}\n");
    }
    y
}

/// The unit with its paths pointed at the binary under test, in a directory of its own.
fn unit_copy(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(UNIT).expect("read systemd/edgegate.service");
    let path = dir.join("edgegate.service");
    std::fs::write(&path, text.replace("/usr/bin/edgegate", BIN)).expect("write unit");
    path
}

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    let tool = find_program("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = Command::new(tool)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{stdout}{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "User=edgegate",
        "SupplementaryGroups=dialout i2c gpio",
        "StateDirectory=edgegate",
        "ConfigurationDirectory=edgegate",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text.lines().any(|l| l == line), "unit lacks `{line}`");
    }
    assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
}

#[test]
fn unit_security_exposure_is_at_most_2() {
    let tool = find_program("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = Command::new(tool)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for edgegate.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}

#[test]
fn ready_comes_after_listeners_and_outbox_then_watchdog_pings_follow() {
    let (broker, health) = (free_port(), free_port());
    let mut gw = Gw::new(&site(broker, health, free_port(), &["temp-1"], "200ms"));
    let notify = NotifySocket::bind(gw.dir.path());
    let sock = notify.path.display().to_string();
    gw.start(&[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", "1000000")]);
    let started = Instant::now();
    notify.wait_for("READY=1", Duration::from_secs(20), &gw);
    // At READY both listeners accept and the outbox file exists.
    assert!(std::net::TcpStream::connect(("127.0.0.1", broker)).is_ok());
    assert!(std::net::TcpStream::connect(("127.0.0.1", health)).is_ok());
    assert!(gw.path("data/edgegate.db").exists());
    let window = Instant::now() + Duration::from_secs(3);
    let pings = notify
        .collect_until(window)
        .into_iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    // Half of WATCHDOG_USEC apart: about 6 in 3 s.
    assert!(
        pings >= 4,
        "only {pings} watchdog pings in 3 s\n{}",
        gw.log()
    );
    assert_eq!(gw.stop(), Some(0));
    let rest = notify.collect_until(Instant::now() + Duration::from_millis(200));
    assert!(
        rest.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "no STOPPING=1 at shutdown: {rest:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// With one stage wedged by the fault-injection hook, pings stop once its silence passes the
/// limit (5 s), `/healthz` names it, and the other stages do not mask it.
fn wedged_stage_stops_the_pings(stage: &str) {
    let (broker, health) = (free_port(), free_port());
    let mosquitto = Mosquitto::start();
    let mut gw = Gw::new(&site(broker, health, mosquitto.port, &["temp-1"], "200ms"));
    let notify = NotifySocket::bind(gw.dir.path());
    let sock = notify.path.display().to_string();
    let wedge = format!("{stage}@2s");
    gw.start(&[
        ("NOTIFY_SOCKET", &sock),
        ("WATCHDOG_USEC", "1000000"),
        ("EDGEGATE_FAULT_WEDGE", &wedge),
    ]);
    let ready = notify.wait_for("READY=1", Duration::from_secs(20), &gw);
    // Pings flow until the stage, wedged 2 s after start, has been silent for 5 s; then the
    // stall is announced and the pings stop. Timed from the announcement, so a slow machine
    // (or qemu) only makes it later.
    let mut pings_before = 0;
    let stalled_at = loop {
        let (at, msg) = notify
            .recv(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no stall announced for {stage}\n{}", gw.log()));
        if msg.lines().any(|l| l == "WATCHDOG=1") {
            pings_before += 1;
        }
        if msg.lines().any(|l| l.starts_with("STATUS=stalled: ")) {
            assert!(msg.contains(stage), "{msg}");
            break at;
        }
    };
    assert!(
        pings_before >= 3,
        "pings must go on until the stall: {pings_before}"
    );
    assert!(
        stalled_at - ready >= Duration::from_secs(5),
        "stall announced before 5 s of silence could have passed"
    );
    let after = notify.collect_until(Instant::now() + Duration::from_secs(3));
    let pings_after: Vec<_> = after
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .collect();
    assert!(
        pings_after.is_empty(),
        "watchdog pinged while {stage} was wedged: {pings_after:?}\n{}",
        gw.log()
    );
    let (status, body) = http_get(health, "/healthz").expect("healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("stage {stage} made no progress")),
        "{body}"
    );
    assert!(
        gw.log().contains("withholding the watchdog ping"),
        "{}",
        gw.log()
    );
}

#[test]
fn wedged_normalize_stops_the_watchdog() {
    wedged_stage_stops_the_pings("normalize");
}

#[test]
fn wedged_outbox_writer_probe_stops_the_watchdog() {
    wedged_stage_stops_the_pings("outbox");
}

#[test]
fn wedged_uplink_loop_stops_the_watchdog() {
    wedged_stage_stops_the_pings("uplink");
}

#[test]
fn wedged_adapter_stops_the_watchdog() {
    wedged_stage_stops_the_pings("adapter:temp-1");
}

#[tokio::test]
async fn metrics_parse_and_count_what_went_through() {
    let (broker, health) = (free_port(), free_port());
    // Nobody listens on the uplink port: everything stays in the outbox.
    let mut gw = Gw::new(&site(
        broker,
        health,
        free_port(),
        &["cold-1", "cold-2"],
        "1h",
    ));
    gw.start(&[]);
    // One reading per device (the first poll is immediate, the next an hour away).
    wait_for("both first readings", Duration::from_secs(20), || {
        let Ok((200, body)) = http_get(health, "/metrics") else {
            return false;
        };
        body.contains("edgegate_readings_total{device=\"cold-2\"} 1\n")
            && body.contains("edgegate_readings_total{device=\"cold-1\"} 1\n")
    })
    .await;
    let m0 = scrape(health);
    assert_eq!(metric(&m0, "edgegate_uplink_connected"), 0.0);
    assert_eq!(metric(&m0, "edgegate_broker_clients"), 0.0);

    // A local client publishes 150 messages under the forwarded prefix: past max_rows (100).
    let mut opts = rumqttc::MqttOptions::new("pump-ctl", "127.0.0.1", broker);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 200);
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = acks.clone();
    let poller = tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = ev {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    for i in 0..150 {
        client
            .publish(
                "farm/gw1/pump/flow",
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .await
            .unwrap();
    }
    wait_for("150 PUBACKs", Duration::from_secs(20), || {
        acks.load(std::sync::atomic::Ordering::Relaxed) == 150
    })
    .await;
    // Committed within one commit interval; give it a few.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m1 = scrape(health);
    assert_eq!(metric(&m1, "edgegate_broker_clients"), 1.0);
    let published = metric(&m1, "edgegate_broker_messages_received_total")
        - metric(&m0, "edgegate_broker_messages_received_total");
    assert_eq!(published, 150.0);
    // Every message on the bus is under farm/gw1/# and so forwarded; none acknowledged upstream:
    // what is not in the outbox was dropped by the cap, and counted so.
    let in_outbox = metric(&m1, "edgegate_outbox_messages");
    let drops: f64 = m1
        .iter()
        .filter(|(k, _)| k.starts_with("edgegate_outbox_dropped_total{reason=\"max_rows\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(in_outbox, 100.0);
    assert_eq!(
        in_outbox + drops,
        metric(&m1, "edgegate_broker_messages_received_total"),
        "outbox + drops must account for every forwarded message"
    );
    assert!(
        metric(
            &m1,
            "edgegate_outbox_dropped_total{reason=\"max_rows\",device=\"pump-ctl\"}"
        ) >= 48.0
    );
    let rows: i64 = rusqlite::Connection::open(gw.path("data/edgegate.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as f64, in_outbox);
    assert!(metric(&m1, "edgegate_outbox_bytes") > 0.0);
    assert!(metric(&m1, "edgegate_outbox_oldest_age_seconds") >= 0.0);
    assert_eq!(metric(&m1, "edgegate_outbox_writable"), 1.0);
    assert_eq!(
        metric(&m1, "edgegate_readings_total{device=\"cold-1\"}"),
        1.0
    );
    assert_eq!(metric(&m1, "edgegate_uplink_reconnects_total"), 0.0);
    poller.abort();
    drop(client);
    assert_eq!(gw.stop(), Some(0));
}

#[tokio::test]
async fn healthz_turns_503_when_the_uplink_is_down_past_its_grace() {
    let (broker, health) = (free_port(), free_port());
    let mut mosquitto = Mosquitto::start();
    let mut gw = Gw::new(&site(broker, health, mosquitto.port, &["temp-1"], "200ms"));
    gw.start(&[]);
    wait_for(
        "healthy with the uplink up",
        Duration::from_secs(20),
        || matches!(http_get(health, "/healthz"), Ok((200, _))),
    )
    .await;
    // Healthy already inside the grace; wait for the connection itself.
    wait_for("uplink connected", Duration::from_secs(20), || {
        scrape(health).get("edgegate_uplink_connected") == Some(&1.0)
    })
    .await;
    mosquitto.kill9();
    let down = Instant::now();
    wait_for("uplink seen down", Duration::from_secs(10), || {
        scrape(health).get("edgegate_uplink_connected") == Some(&0.0)
    })
    .await;
    // Inside the 3 s grace: still healthy.
    if down.elapsed() < Duration::from_secs(2) {
        let (status, body) = http_get(health, "/healthz").unwrap();
        assert_eq!(status, 200, "degraded inside the grace period: {body}");
    }
    wait_for(
        "503 past the grace",
        Duration::from_secs(15),
        || matches!(http_get(health, "/healthz"), Ok((503, b)) if b.contains("uplink down for")),
    )
    .await;
    assert!(
        down.elapsed() >= Duration::from_secs(3),
        "503 before the grace ran out"
    );
    assert_eq!(metric(&scrape(health), "edgegate_up"), 0.0);
    mosquitto.restart();
    wait_for("healthy again", Duration::from_secs(20), || {
        matches!(http_get(health, "/healthz"), Ok((200, _)))
    })
    .await;
    let m = scrape(health);
    assert_eq!(metric(&m, "edgegate_uplink_reconnects_total"), 1.0);
    assert_eq!(metric(&m, "edgegate_up"), 1.0);
    let (status, _) = http_get(health, "/nothing").unwrap();
    assert_eq!(status, 404);
    assert_eq!(gw.stop(), Some(0));
}

/// Outbox rows as (id, topic), oldest first.
fn outbox_rows(db: &Path) -> Vec<(i64, String)> {
    support::outbox_rows(db)
        .into_iter()
        .map(|r| (r.id, r.topic))
        .collect()
}

#[tokio::test]
async fn sighup_swaps_devices_and_routes_keeps_clients_and_backlog_and_rejects_bad_configs() {
    let (broker, health, uplink) = (free_port(), free_port(), free_port());
    let before = site(broker, health, uplink, &["temp-1"], "100ms")
        .replace("max_rows: 100", "max_rows: 100000");
    let mut gw = Gw::new(&before);
    gw.start(&[]);
    wait_for("health endpoint", Duration::from_secs(20), || {
        http_get(health, "/healthz").is_ok()
    })
    .await;
    // A local client stays connected across the reloads.
    let local = support::Subscriber::start(broker, "screen", "#", false).await;
    wait_for(
        "a backlog while the uplink is down",
        Duration::from_secs(20),
        || outbox_rows(&gw.path("data/edgegate.db")).len() >= 10,
    )
    .await;
    let backlog = outbox_rows(&gw.path("data/edgegate.db"));

    // New device, new forward rule (only temperatures go upstream now), changed broker port
    // (needs a restart: kept as it is).
    let after = site(free_port(), health, uplink, &["temp-2"], "100ms")
        .replace("max_rows: 100", "max_rows: 100000")
        .replace(
            "  reconnect_max: 300ms\n",
            "  reconnect_max: 300ms\n  forward: [\"{site}/{gateway}/+/temperature\"]\n",
        );
    std::fs::write(&gw.config, &after).unwrap();
    gw.signal("HUP");
    wait_for("reloaded", Duration::from_secs(10), || {
        gw.log().contains("reloaded: 1 devices")
    })
    .await;
    assert!(
        gw.log()
            .contains("reload: broker changed; that takes effect after a restart"),
        "{}",
        gw.log()
    );
    let reloaded_at = std::time::SystemTime::now();
    wait_for(
        "temp-2 readings on the local bus",
        Duration::from_secs(10),
        || {
            local
                .snapshot()
                .iter()
                .any(|r| r.topic == "farm/gw1/temp-2/temperature")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late_temp1 = local.snapshot().into_iter().filter(|r| {
        r.topic == "farm/gw1/temp-1/temperature" && r.at > reloaded_at + Duration::from_millis(200)
    });
    assert_eq!(late_temp1.count(), 0, "temp-1 must stop after the reload");
    // The same client connection saw it all, and it is still the one connected.
    let m = scrape(health);
    assert_eq!(metric(&m, "edgegate_broker_clients"), 1.0);
    // The backlog is still there, untouched.
    let rows = outbox_rows(&gw.path("data/edgegate.db"));
    for r in &backlog {
        assert!(rows.contains(r), "backlog row {r:?} lost in the reload");
    }
    // The new forward rule: temp-2's status (not a temperature) stays local.
    assert!(rows.iter().any(|(_, t)| t == "farm/gw1/temp-2/temperature"));
    assert!(
        !rows.iter().any(|(_, t)| t == "farm/gw1/temp-2/status"),
        "{rows:?}"
    );

    // An invalid file: rejected with its position, the running config goes on.
    std::fs::write(
        &gw.config,
        after.replace("  listen: 127.0.0.1:", "  listne: 127.0.0.1:"),
    )
    .unwrap();
    gw.signal("HUP");
    wait_for("rejected", Duration::from_secs(10), || {
        gw.log().contains("reload rejected")
    })
    .await;
    let log = gw.log();
    let cfg_name = gw.config.display().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("{cfg_name}:")) && l.contains("unknown key `listne`")),
        "{log}"
    );
    assert!(log.contains("keeping the running config"), "{log}");
    let n = local.snapshot().len();
    wait_for("readings go on", Duration::from_secs(5), || {
        local.snapshot().len() > n + 3
    })
    .await;
    assert!(gw.running());

    // Upstream comes: the pre-reload backlog is delivered (a row goes only on its PUBACK).
    let _mosquitto = Mosquitto::start_on(uplink);
    wait_for("backlog delivered", Duration::from_secs(30), || {
        let left = outbox_rows(&gw.path("data/edgegate.db"));
        !backlog.iter().any(|r| left.contains(r))
    })
    .await;
    assert_eq!(gw.stop(), Some(0));
}

#[test]
fn under_systemd_logs_go_to_the_journal_and_elsewhere_to_stderr() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.yaml");
    std::fs::write(
        &config,
        site(free_port(), free_port(), free_port(), &["t"], "1s"),
    )
    .unwrap();
    let run = |journal_stream: Option<&dyn Fn(&std::fs::File) -> String>| {
        let path = dir.path().join("stderr.log");
        let log = std::fs::File::create(&path).unwrap();
        let mut cmd = support::gateway_command();
        cmd.args(["run", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if let Some(f) = journal_stream {
            cmd.env("JOURNAL_STREAM", f(&log));
        }
        let mut child = cmd.stderr(log).spawn().unwrap();
        let start = Instant::now();
        while !std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains("edgegate running")
            && start.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        support::signal(&child, "TERM");
        let _ = child.wait();
        std::fs::read_to_string(&path).unwrap()
    };
    // Not under systemd: plain lines on stderr.
    let plain = run(None);
    assert!(plain.contains("edgegate running"), "{plain}");
    assert!(!plain.contains("journal"), "{plain}");
    // JOURNAL_STREAM naming our stderr: the journal is chosen. This machine runs no journald,
    // so the gateway says so once and keeps logging to stderr.
    let same = |f: &std::fs::File| {
        let m = f.metadata().unwrap();
        format!("{}:{}", m.dev(), m.ino())
    };
    let journal = run(Some(&same));
    if !Path::new("/run/systemd/journal/socket").exists() {
        assert!(
            journal.contains("cannot log to the journal") && journal.contains("edgegate running"),
            "{journal}"
        );
    } else {
        assert!(
            !journal.contains("edgegate running"),
            "went to stderr: {journal}"
        );
    }
    // An inherited JOURNAL_STREAM that is not our stderr is ignored.
    let other = run(Some(&|_: &std::fs::File| "1:2".to_string()));
    assert!(
        other.contains("edgegate running") && !other.contains("journal"),
        "{other}"
    );
}

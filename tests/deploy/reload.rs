//! SIGHUP again and again: what a reload says and what it sends.

use std::time::Duration;

use crate::gw::Gw;
use crate::site;
use crate::support::{free_port, wait_for};

/// Sends SIGHUP and waits for the `n`th "reloaded:" line.
async fn reload(gw: &Gw, n: usize) {
    gw.signal("HUP");
    wait_for("reloaded", Duration::from_secs(10), || {
        gw.log().matches("reloaded: ").count() >= n
    })
    .await;
}

#[tokio::test]
async fn a_changed_mqttsn_section_is_kept_and_the_log_says_it_needs_a_restart() {
    let (broker, health, uplink) = (free_port(), free_port(), free_port());
    let with_mqttsn = |port: u16| {
        site(broker, health, uplink, &["t"], "1s")
            + &format!("mqttsn:\n  listen: 127.0.0.1:{port}\n")
    };
    let (old_port, new_port) = (free_port(), free_port());
    let mut gw = Gw::new(&with_mqttsn(old_port));
    gw.start(&[]);
    wait_for("running", Duration::from_secs(20), || {
        gw.log().contains("edgegate running")
    })
    .await;
    std::fs::write(&gw.config, with_mqttsn(new_port)).unwrap();
    reload(&gw, 1).await;
    let log = gw.log();
    let warning = log
        .lines()
        .find(|l| l.contains("reload: mqttsn changed"))
        .unwrap_or_else(|| panic!("no warning about mqttsn:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("after a restart"),
        "{warning}"
    );
    // Still the old socket: a reload does not move the gateway.
    let probe = std::net::UdpSocket::bind(("127.0.0.1", new_port));
    assert!(probe.is_ok(), "the new port was taken by the reload");
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", old_port)).is_err(),
        "the running gateway left its port"
    );
    assert_eq!(gw.stop(), Some(0));
}

/// (id, topic) of every outbox row; none while the file is still being created.
fn rows(gw: &Gw) -> Vec<(i64, String)> {
    let path = gw.path("data/edgegate.db");
    if !path.exists() {
        return Vec::new();
    }
    crate::support::outbox_rows(&path)
        .into_iter()
        .map(|r| (r.id, r.topic))
        .collect()
}

#[tokio::test]
async fn reloads_do_not_send_a_device_status_that_did_not_change() {
    // No broker upstream: everything forwarded stays in the outbox, where it is counted.
    let (broker, health, uplink) = (free_port(), free_port(), free_port());
    let yaml =
        site(broker, health, uplink, &["t"], "100ms").replace("max_rows: 100", "max_rows: 100000");
    let mut gw = Gw::new(&yaml);
    gw.start(&[]);
    let readings = |gw: &Gw, after: i64| {
        rows(gw)
            .into_iter()
            .filter(|(id, t)| *id > after && t == "farm/gw1/t/temperature")
            .count()
    };
    wait_for("first readings", Duration::from_secs(20), || {
        readings(&gw, 0) > 0
    })
    .await;
    for n in 1..=5 {
        reload(&gw, n).await;
        // The old pipeline stopped before "reloaded": a reading committed after it comes from
        // the new one, which publishes any status change before its first reading.
        let before = rows(&gw).last().map_or(0, |r| r.0);
        wait_for(
            "a reading after the reload",
            Duration::from_secs(10),
            || readings(&gw, before) > 0,
        )
        .await;
    }
    let statuses: Vec<(i64, String)> = rows(&gw)
        .into_iter()
        .filter(|(_, t)| t == "farm/gw1/t/status")
        .collect();
    assert_eq!(
        statuses.len(),
        1,
        "the device was online all along: {statuses:?}"
    );
    assert_eq!(gw.stop(), Some(0));
}

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

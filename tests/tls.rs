//! The uplink over TLS to a real Mosquitto: trust only the configured CA; mTLS.

mod support;

use std::time::Duration;

use support::*;

/// A site whose uplink goes to `tls_port` with the given `tls:` lines.
fn tls_site(tls_port: u16, tls: &str) -> String {
    site_yaml(free_port(), tls_port, 1, 0, 50).replace(
        "  reconnect_max: 500ms\n",
        &format!("  reconnect_max: 500ms\n  tls:\n{tls}"),
    )
}

async fn readings_arrive(up: &Subscriber) -> bool {
    wait_until(Duration::from_secs(10), || up.seqs().len() >= 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trusts_only_the_configured_ca() {
    let pki = Pki::new();
    let tls_port = free_port();
    let mosquitto = Mosquitto::start_with(free_port(), &pki.listener(tls_port, false));
    let up = Subscriber::start(mosquitto.port, "tls-watch", "farm/#", false).await;

    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("    ca_file: {}\n", pki.path("other-ca.pem"));
    let mut gw = Gateway::new(dir.path(), &tls_site(tls_port, &wrong));
    gw.start();
    wait_for(
        "a refused certificate in the log",
        Duration::from_secs(10),
        || gw.log().contains("UnknownIssuer"),
    )
    .await;
    assert!(
        up.seqs().is_empty(),
        "a broker with an unknown CA must not get readings"
    );
    gw.kill9();

    let dir = tempfile::tempdir().unwrap();
    let right = format!("    ca_file: {}\n    alpn: [mqtt]\n", pki.path("ca.pem"));
    let mut gw = Gateway::new(dir.path(), &tls_site(tls_port, &right));
    gw.start();
    assert!(
        readings_arrive(&up).await,
        "nothing over TLS:\n{}",
        gw.log()
    );
    gw.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let tls_port = free_port();
    let mosquitto = Mosquitto::start_with(free_port(), &pki.listener(tls_port, true));
    let up = Subscriber::start(mosquitto.port, "mtls-watch", "farm/#", false).await;

    let dir = tempfile::tempdir().unwrap();
    let no_cert = format!("    ca_file: {}\n", pki.path("ca.pem"));
    let mut gw = Gateway::new(dir.path(), &tls_site(tls_port, &no_cert));
    gw.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        up.seqs().is_empty(),
        "connected without a client certificate"
    );
    assert!(gw.log().contains("unavailable"), "{}", gw.log());
    gw.kill9();

    let dir = tempfile::tempdir().unwrap();
    let with_cert = format!(
        "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let mut gw = Gateway::new(dir.path(), &tls_site(tls_port, &with_cert));
    gw.start();
    assert!(
        readings_arrive(&up).await,
        "nothing over mTLS:\n{}",
        gw.log()
    );
    gw.terminate();
}

#[test]
fn check_names_a_tls_file_that_is_missing_or_not_pem() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let tls = format!(
        "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("nope.key")
    );
    let gw = Gateway::new(dir.path(), &tls_site(1883, &tls));
    let out = gateway_command()
        .args(["check", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("uplink.tls.key_file") && err.contains("nope.key"),
        "{err}"
    );
}

//! `edgegate check` on the listener settings.

use super::*;

fn check(extra: &str) -> (Option<i32>, String, String, String) {
    let yaml = site_with_broker(extra);
    let (code, err, path) = check_yaml(&yaml);
    (code, err, path, yaml)
}

fn check_yaml(yaml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::new(dir.path(), yaml);
    let out = gateway_command()
        .args(["check", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, gw.config.display().to_string())
}

/// 1-based line of the first line of `yaml` that starts with `prefix`.
fn line_of(yaml: &str, prefix: &str) -> usize {
    1 + yaml
        .lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?}"))
}

#[test]
fn bad_listener_settings_fail_check_with_positions() {
    let pki = Pki::new();
    let tls = |cert: &str, key: &str| {
        format!(
            "  tls:\n    listen: 127.0.0.1:8883\n    cert: {}\n    key: {}\n",
            pki.path(cert),
            pki.path(key)
        )
    };
    // (broker lines, the line the error is on, what the error says)
    let cases = [
        (
            tls("nope.pem", "server.key"),
            "    cert:",
            vec!["broker.tls.cert", "cannot read", "nope.pem"],
        ),
        (
            tls("server.key", "server.key"),
            "    cert:",
            vec!["broker.tls.cert", "no PEM certificate"],
        ),
        (
            tls("server.pem", "nope.key"),
            "    key:",
            vec!["broker.tls.key", "cannot read", "nope.key"],
        ),
        (
            tls("server.pem", "server.pem"),
            "    key:",
            vec!["broker.tls.key", "not a PEM private key"],
        ),
        (
            tls("server.pem", "client.key"),
            "    key:",
            vec!["broker.tls.key", "do not fit together"],
        ),
        (
            format!(
                "  tls:\n    cert: {}\n    key: {}\n",
                pki.path("server.pem"),
                pki.path("server.key")
            ),
            "  tls:",
            vec!["broker.tls", "missing required key `listen`"],
        ),
        (
            tls("server.pem", "server.key") + &format!("    client_ca: {}\n", pki.path("nope.pem")),
            "    client_ca:",
            vec!["broker.tls.client_ca", "cannot read", "nope.pem"],
        ),
        (
            tls("server.pem", "server.key")
                + &format!("    client_ca: {}\n", pki.path("client.key")),
            "    client_ca:",
            vec!["broker.tls.client_ca", "no PEM certificate"],
        ),
        (
            tls("server.pem", "server.key") + "    identity_as_username: true\n",
            "    identity_as_username:",
            vec!["broker.tls.identity_as_username", "needs `client_ca`"],
        ),
        (
            tls("server.pem", "server.key") + "    require_client_cert: true\n",
            "    require_client_cert:",
            vec!["broker.tls.require_client_cert", "needs `client_ca`"],
        ),
        (
            tls("server.pem", "server.key")
                + &format!(
                    "    client_ca: {}\n    require_client_cert: always\n",
                    pki.path("ca.pem")
                ),
            "    require_client_cert:",
            vec!["broker.tls.require_client_cert"],
        ),
        (
            "  websocket: localhost\n".into(),
            "  websocket:",
            vec!["broker.websocket", "not an IP address with a port"],
        ),
    ];
    for (extra, at, says) in cases {
        let (code, err, path, yaml) = check(&extra);
        assert_eq!(code, Some(2), "{extra}\n{err}");
        let pos = format!("{path}:{}:", line_of(&yaml, at));
        assert!(err.contains(&pos), "{extra}: want an error at {pos}\n{err}");
        for s in says {
            assert!(err.contains(s), "{extra}: want {s:?}\n{err}");
        }
    }
    // The same address as the TCP listener.
    let local = free_port();
    let yaml = site_yaml(local, free_port(), 1, 0, 50).replace(
        &format!("  listen: 127.0.0.1:{local}\n"),
        &format!("  listen: 127.0.0.1:{local}\n  websocket: 127.0.0.1:{local}\n"),
    );
    let (code, err, path) = check_yaml(&yaml);
    assert_eq!(code, Some(2), "{err}");
    let pos = format!("{path}:{}:", line_of(&yaml, "  websocket:"));
    assert!(
        err.contains(&pos) && err.contains("is already `broker.listen`"),
        "{err}"
    );
}

#[test]
fn listeners_example_passes_check() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/broker-listeners.yaml"
    );
    let out = gateway_command()
        .args(["check", "--config", path])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

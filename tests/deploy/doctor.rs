//! `edgegate doctor` against real brokers and real directories.

use std::path::Path;

use crate::support::{self, free_port, Mosquitto};

/// `edgegate doctor` on `yaml`: (exit code, stdout).
fn doctor(dir: &Path, yaml: &str) -> (Option<i32>, String) {
    let config = dir.join("site.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = support::gateway_command()
        .args(["doctor", "--config"])
        .arg(&config)
        .current_dir(dir)
        .output()
        .expect("run doctor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The exit code must follow the lines: 0 exactly when no line failed.
fn assert_exit_matches(code: Option<i32>, out: &str) {
    let failed = out.lines().any(|l| l.starts_with("FAIL"));
    assert_eq!(code, Some(if failed { 1 } else { 0 }), "{out}");
    for (i, l) in out.lines().enumerate() {
        if l.starts_with("FAIL") {
            let next = out.lines().nth(i + 1).unwrap_or("");
            assert!(
                next.starts_with("      fix: "),
                "a failure without a fix: {l}\n{out}"
            );
        }
    }
}

#[test]
fn doctor_walks_the_uplink_path_over_tls_to_a_real_broker() {
    let pki = support::Pki::new();
    let tls_port = free_port();
    let _mosquitto = Mosquitto::start_with(free_port(), &pki.listener(tls_port, false));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "site: farm\ngateway: gw1\nuplink:\n  host: 127.0.0.1\n  port: {tls_port}\n  tls:\n    ca_file: {}\nbuffer:\n  dir: data\n",
        pki.path("ca.pem")
    );
    let (code, out) = doctor(dir.path(), &yaml);
    for line in [
        "PASS  devices: no device paths in the config",
        "PASS  buffer directory: data is writable",
        &format!("PASS  uplink tcp: connected to 127.0.0.1:{tls_port}"),
        "PASS  uplink tls: handshake done, broker certificate trusted",
        "PASS  uplink mqtt: CONNECT accepted",
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    assert!(out
        .lines()
        .any(|l| l == "PASS  uplink dns: 127.0.0.1 -> 127.0.0.1"));
    assert!(out
        .lines()
        .any(|l| l.starts_with("PASS  clock: ") || l.starts_with("FAIL  clock: ")));
    assert_exit_matches(code, &out);

    // The wrong CA: TLS fails with its fix, and MQTT is not attempted.
    let wrong = yaml.replace("ca.pem", "other-ca.pem");
    let (code, out) = doctor(dir.path(), &wrong);
    assert!(
        out.lines().any(|l| l.starts_with("FAIL  uplink tls: ")),
        "{out}"
    );
    assert!(!out.contains("uplink mqtt"), "{out}");
    assert_eq!(code, Some(1));
    assert_exit_matches(code, &out);
}

#[test]
fn doctor_names_each_failure_with_a_fix_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-dir"), "x").unwrap();
    let closed = free_port();
    let yaml = format!(
        "site: farm\ngateway: gw1\nuplink:\n  host: 127.0.0.1\n  port: {closed}\nbuffer:\n  dir: not-a-dir/data\n"
    );
    let (code, out) = doctor(dir.path(), &yaml);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  buffer directory: not-a-dir/data is not writable")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "FAIL  uplink tcp: cannot connect to 127.0.0.1:{closed}"
        ))),
        "{out}"
    );
    assert!(out.contains("      fix: check uplink.port"), "{out}");
    assert_exit_matches(code, &out);
    let (code, out) = doctor(dir.path(), "site: farm\ngateway: gw1\n");
    assert!(out.contains("PASS  uplink: none configured"), "{out}");
    assert_exit_matches(code, &out);
    assert!(
        out.ends_with("checks passed\n") || out.ends_with("checks failed\n"),
        "{out}"
    );
}

#[test]
fn doctor_checks_the_i2c_bus_even_when_it_is_the_default() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/i2c.yaml");
    let yaml = std::fs::read_to_string(example)
        .unwrap()
        .replace("dir: /var/lib/edgegate", "dir: data");
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = doctor(dir.path(), &yaml);
    let line = out
        .lines()
        .find(|l| l.contains("device /dev/i2c-1: "))
        .unwrap_or_else(|| panic!("no check of /dev/i2c-1:\n{out}"));
    assert!(line.contains("devices.coldroom-1.i2c.bus"), "{line}");
    if !Path::new("/dev/i2c-1").exists() {
        assert!(line.starts_with("FAIL"), "{line}");
        assert!(out.contains("do_i2c"), "{out}");
        assert_eq!(code, Some(1));
    }
    assert_exit_matches(code, &out);
}

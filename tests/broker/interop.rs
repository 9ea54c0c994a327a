//! Interoperability with Debian's mosquitto clients (package mosquitto-clients).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use edgegate::bus::Message;
use tokio::time::{timeout, Instant};

use super::support::*;

/// Finds a mosquitto client binary on PATH (or /usr/bin); fails the test if it is missing.
fn mosquitto_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install mosquitto-clients (apt-get install mosquitto-clients) \
                 to run the MQTT interoperability test"
            )
        })
}

#[tokio::test]
async fn mosquitto_clients_interoperate() {
    let b = Broker::start().await;
    let port = b.addr().port().to_string();
    let pub_bin = mosquitto_bin("mosquitto_pub");
    let sub_bin = mosquitto_bin("mosquitto_sub");

    // mosquitto_pub -q 1 -r exits 0 only after our PUBACK.
    let mut inproc = b
        .bus
        .subscribe(&["interop/#".to_string()], 8, false)
        .unwrap();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-q",
        "1",
        "-r",
        "-t",
        "interop/retained",
        "-m",
        "hello",
    ];
    let mut cmd = Command::new(&pub_bin);
    cmd.args(args);
    let out = timeout(WAIT, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("mosquitto_pub timed out")
        .unwrap()
        .expect("run mosquitto_pub");
    assert!(out.status.success(), "mosquitto_pub failed: {out:?}");
    let got = timeout(WAIT, inproc.recv()).await.unwrap().unwrap();
    assert_eq!(got.topic, "interop/retained");
    assert_eq!(got.payload, &b"hello"[..]);
    assert_eq!(got.qos, 1);

    // mosquitto_sub gets the retained message, then a live one published in-process.
    let mut child = Command::new(&sub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-v",
            "-C",
            "2",
            "-W",
            "10",
            "-t",
            "interop/#",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_sub");
    let deadline = Instant::now() + Duration::from_secs(10);
    // It subscribes at some point after starting: keep publishing until it has two messages.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto_sub did not finish");
        }
        b.bus
            .publish(Message {
                topic: "interop/live".into(),
                payload: Bytes::from_static(b"world"),
                qos: 1,
                retain: false,
                props: None,
            })
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "mosquitto_sub failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["interop/retained hello", "interop/live world"],
        "{out:?}"
    );
}

/// The paho-mqtt client (PyPI), installed by scripts/test.sh into a venv whose python it names
/// in EDGEGATE_PAHO_PYTHON.
#[tokio::test]
async fn paho_mqtt_v311_interoperates() {
    let Some(python) = std::env::var_os("EDGEGATE_PAHO_PYTHON") else {
        eprintln!(
            "SKIPPED paho_mqtt_v311_interoperates: EDGEGATE_PAHO_PYTHON is not set; \
             scripts/test.sh installs paho-mqtt and sets it"
        );
        return;
    };
    let b = Broker::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/broker/paho_interop.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(b.addr().port().to_string());
    let out = timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("paho script timed out")
    .unwrap()
    .expect("run the paho script");
    assert!(out.status.success(), "paho script failed: {out:?}");
    let events: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["client"] == "paho-sub")
            .collect::<Vec<_>>()
    };
    assert_eq!(of("suback")[0]["codes"], serde_json::json!([2]));
    let messages: Vec<(String, String, u64, bool)> = of("message")
        .iter()
        .map(|e| {
            (
                e["topic"].as_str().unwrap().to_owned(),
                e["payload"].as_str().unwrap().to_owned(),
                e["qos"].as_u64().unwrap(),
                e["retain"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        ("paho/retained", "kept", 1, true),
        ("paho/q0", "qos0", 0, false),
        ("paho/q1", "qos1", 1, false),
        ("paho/q2", "qos2", 2, false),
        ("paho/will", "bye", 1, false),
        ("paho/offline", "queued", 1, false),
    ]
    .map(|(t, p, q, r)| (t.to_owned(), p.to_owned(), q, r));
    assert_eq!(messages, want);
    let connacks = of("connack");
    assert_eq!(connacks.len(), 2, "{events:?}");
    assert_eq!(connacks[0]["session_present"], false);
    assert_eq!(connacks[1]["session_present"], true);
    assert!(connacks.iter().all(|c| c["rc"] == 0));
}

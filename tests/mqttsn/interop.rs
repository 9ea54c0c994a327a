//! Interoperability with the command-line clients of the PyPI package `mqtt-sn-12`
//! (`mqtt_sn_pub`, `mqtt_sn_sub`), which the test script installs into a venv and names in
//! `EDGEGATE_MQTTSN_TOOLS` (its `bin` directory).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::client::*;

/// The tool, or `None` (with a loud message) when run outside the test script without the venv.
fn tool(name: &str) -> Option<PathBuf> {
    let configured = std::env::var("EDGEGATE_MQTTSN_TOOLS").ok();
    let dir = configured
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin"));
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        configured.is_none(),
        "EDGEGATE_MQTTSN_TOOLS is set but {} is missing",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} not found; scripts/test.sh installs the PyPI package mqtt-sn-12 there",
        path.display()
    );
    None
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run an mqtt-sn-12 tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sn_pub_at_qos_minus_one_to_two_and_sleep() {
    let Some(publisher) = tool("mqtt_sn_pub") else {
        return;
    };
    let site = Site::start("  predefined:\n    - {id: 257, topic: \"radio/py/beacon\"}\n").await;
    let sub = site.subscriber("#").await;
    let port = site.udp.port().to_string();
    for qos in ["0", "1", "2"] {
        let topic = format!("radio/py/q{qos}");
        let (ok, out) = run(Command::new(&publisher).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            qos,
            "-t",
            &topic,
            "-m",
            &format!("v{qos}"),
            "-i",
            &format!("py-pub-{qos}"),
            "--timeout",
            "5",
        ]));
        assert!(ok, "mqtt_sn_pub -q {qos} failed: {out}");
        assert_eq!(
            wait_message(&sub, &topic).await,
            format!("v{qos}").as_bytes()
        );
    }
    // QoS -1: no connection, a predefined topic id, and a short topic name.
    let (ok, out) = run(Command::new(&publisher).args([
        "-p",
        &port,
        "-q",
        "-1",
        "-T",
        "257",
        "-m",
        "beacon",
        "--timeout",
        "5",
    ]));
    assert!(ok, "mqtt_sn_pub -q -1 -T failed: {out}");
    assert_eq!(wait_message(&sub, "radio/py/beacon").await, b"beacon");
    let (ok, out) = run(Command::new(&publisher).args([
        "-p",
        &port,
        "-q",
        "-1",
        "-t",
        "zz",
        "-m",
        "short",
        "--timeout",
        "5",
    ]));
    assert!(ok, "mqtt_sn_pub -q -1 -t zz failed: {out}");
    assert_eq!(wait_message(&sub, "zz").await, b"short");
    // Sleep: the tool ends with DISCONNECT(duration 30) and waits for the gateway's DISCONNECT.
    let (ok, out) = run(Command::new(&publisher).args([
        "-p",
        &port,
        "-q",
        "1",
        "-t",
        "radio/py/sleep",
        "-m",
        "zzz",
        "-e",
        "30",
        "-i",
        "py-sleeper",
        "--timeout",
        "5",
    ]));
    assert!(ok, "mqtt_sn_pub -e 30 failed: {out}");
    assert_eq!(wait_message(&sub, "radio/py/sleep").await, b"zzz");
    wait_stats(&site, |s| s["clients"]["asleep"] == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_sn_sub_receives_through_a_wildcard_and_its_will_is_published() {
    let Some(subscriber) = tool("mqtt_sn_sub") else {
        return;
    };
    let site = Site::start("").await;
    let port = site.udp.port().to_string();
    let mut child = Command::new(&subscriber)
        .args([
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            "farm/+/py",
            "-1",
            "-i",
            "py-sub",
            "-k",
            "2",
            "--will-topic",
            "wills/py-sub",
            "--will-payload",
            "vanished",
            "--timeout",
            "10",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mqtt_sn_sub");
    wait_stats(&site, |s| s["clients"]["active"] == 1).await;
    let bus = site.bus_client().await;
    let deadline = Instant::now() + wait();
    // Retained, so the subscription gets it even if it lands just after this publish.
    bus.publish("farm/pump/py", QoS::AtLeastOnce, true, "hello")
        .await
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "mqtt_sn_sub got nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    // The will: a subscriber that dies without DISCONNECT. (The first one has left first.)
    wait_stats(&site, |s| s["clients"]["active"].is_null()).await;
    let wills = site.subscriber("wills/#").await;
    let mut child = Command::new(&subscriber)
        .args([
            "-p",
            &port,
            "-q",
            "0",
            "-t",
            "farm/none",
            "-i",
            "py-will",
            "-k",
            "1",
            "--will-topic",
            "wills/py-will",
            "--will-payload",
            "vanished",
            "--timeout",
            "30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mqtt_sn_sub");
    wait_stats(&site, |s| s["clients"]["active"] == 1).await;
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(wait_message(&wills, "wills/py-will").await, b"vanished");
    // The first one said DISCONNECT: no will from it.
    assert!(payloads(&wills, "wills/py-sub").is_empty());
}

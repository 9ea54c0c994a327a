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

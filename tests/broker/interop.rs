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
                origin: None,
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

/// paho-mqtt as an MQTT 5 client: CONNACK properties, subscription options and identifier,
/// request/response properties, no local, a topic alias from the publisher, PUBACK reason codes.
#[tokio::test]
async fn paho_mqtt_v5_interoperates() {
    let Some(python) = std::env::var_os("EDGEGATE_PAHO_PYTHON") else {
        eprintln!(
            "SKIPPED paho_mqtt_v5_interoperates: EDGEGATE_PAHO_PYTHON is not set; \
             scripts/test.sh installs paho-mqtt and sets it"
        );
        return;
    };
    let b = Broker::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/broker/paho_interop.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(b.addr().port().to_string()).arg("v5");
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
    let of = |kind: &str, client: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["client"] == client)
            .cloned()
            .collect::<Vec<_>>()
    };
    let connack = &of("connack", "paho5-sub")[0];
    assert_eq!(connack["rc"], 0);
    assert_eq!(connack["receive_maximum"], 64);
    assert_eq!(connack["topic_alias_max"], 16);
    assert_eq!(
        of("suback", "paho5-sub")[0]["codes"],
        serde_json::json!([1])
    );
    let messages = of("message", "paho5-sub");
    let summary: Vec<(String, String, u64, bool)> = messages
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
        ("paho5/retained", "kept", 1, true),
        ("paho5/req", "21.5", 1, false),
        ("paho5/aliased", "a1", 1, false),
        ("paho5/aliased", "a2", 1, false),
    ]
    .map(|(t, p, q, r)| (t.to_owned(), p.to_owned(), q, r));
    // paho5/own is missing: no local.
    assert_eq!(summary, want, "{events:?}");
    let req = &messages[1];
    assert_eq!(
        req["user"],
        serde_json::json!([["unit", "C"], ["unit", "F"]])
    );
    assert_eq!(req["response_topic"], "paho5/reply");
    assert_eq!(req["correlation"], "0102");
    assert_eq!(req["content_type"], "text/plain");
    assert_eq!(req["payload_format"], 1);
    let expiry = req["expiry"].as_u64().unwrap();
    assert!((590..=600).contains(&expiry), "{expiry}");
    for m in &messages {
        assert_eq!(m["sub_ids"], serde_json::json!([7]), "{m}");
    }
    let acks = |client: &str| -> Vec<u64> {
        of("puback", client)
            .iter()
            .map(|e| e["rc"].as_u64().unwrap())
            .collect()
    };
    // 0x10 where nobody (else) subscribed.
    assert_eq!(acks("paho5-pub"), [0x10, 0, 0, 0, 0x10]);
    assert_eq!(acks("paho5-sub"), [0x10]);
}

/// mosquitto_pub and mosquitto_sub speaking MQTT 5: message properties and a subscription
/// identifier survive the trip through the broker.
#[tokio::test]
async fn mosquitto_clients_interoperate_over_mqtt5() {
    let b = Broker::start().await;
    let port = b.addr().port().to_string();
    let run = |bin: PathBuf, args: Vec<&str>| {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        async move {
            timeout(
                Duration::from_secs(15),
                tokio::task::spawn_blocking(move || cmd.output()),
            )
            .await
            .expect("mosquitto client timed out")
            .unwrap()
            .expect("run the mosquitto client")
        }
    };
    let host = ["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port];
    let mut args = host.to_vec();
    args.extend([
        "-q",
        "1",
        "-r",
        "-t",
        "mq5/req",
        "-m",
        "21.5",
        "-D",
        "publish",
        "user-property",
        "unit",
        "C",
        "-D",
        "publish",
        "response-topic",
        "mq5/reply",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "correlation-data",
        "abc",
        "-D",
        "publish",
        "message-expiry-interval",
        "600",
    ]);
    let out = run(mosquitto_bin("mosquitto_pub"), args).await;
    assert!(out.status.success(), "mosquitto_pub failed: {out:?}");
    let mut args = host.to_vec();
    args.extend([
        "-q",
        "1",
        "-t",
        "mq5/#",
        "-C",
        "1",
        "-W",
        "10",
        "-D",
        "subscribe",
        "subscription-identifier",
        "9",
        "-F",
        "%t|%p|%q|%r|%C|%R|%D|%P|%S|%E",
    ]);
    let out = run(mosquitto_bin("mosquitto_sub"), args).await;
    assert!(out.status.success(), "mosquitto_sub failed: {out:?}");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (fields, expiry) = line.rsplit_once('|').expect("formatted line");
    assert_eq!(fields, "mq5/req|21.5|1|1|text/plain|mq5/reply|abc|unit:C|9");
    let expiry: u32 = expiry.parse().expect("expiry interval");
    assert!((590..=600).contains(&expiry), "{line}");
}

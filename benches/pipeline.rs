//! Throughput of the data path, as `bench/run.sh` drives it:
//! - ingest: readings/s through normalize -> outbox commit (WAL, synchronous=FULL, batched);
//! - drain: messages/s from a full outbox to an MQTT broker at QoS 1, until the outbox is empty.
//!
//! Usage: pipeline [--readings N] [--backlog N] [--broker-port PORT]
//! Without --broker-port only ingest is measured.

use std::time::{Duration, Instant, SystemTime};

use edgegate::config::{PointConfig, UplinkConfig};
use edgegate::normalize::Normalizer;
use edgegate::reading::{Quality, Reading};
use edgegate::store::{Caps, Class, Outgoing, Store};
use edgegate::uplink::Uplink;
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes this process has caused to be written to storage so far.
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

async fn ingest(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(dir.path(), Duration::from_millis(200), Caps::NONE).expect("open store");
    let points = (0..10).map(|i| {
        let p = PointConfig {
            unit: Some("degC".into()),
            valid_min: Some(-40.0),
            valid_max: Some(85.0),
            ..PointConfig::default()
        };
        (DEVICES[i], "temperature", p)
    });
    let mut norm =
        Normalizer::with_points("site", "gw", "{site}/{gateway}/{device}/{quantity}", points);
    let io_before = write_bytes();
    let mut payload_bytes = 0u64;
    let start = Instant::now();
    for i in 0..n {
        let r = Reading {
            device: DEVICES[(i % 10) as usize].to_string(),
            quantity: "temperature".into(),
            value: 20.0 + (i % 100) as f64 / 10.0,
            unit: Some("degC"),
            ts: SystemTime::now(),
            quality: Quality::Good,
        };
        let Some(m) = norm.process(&r, || store.next_seq()) else {
            continue;
        };
        payload_bytes += m.payload.len() as u64;
        store
            .enqueue(Outgoing {
                topic: m.topic,
                payload: m.payload,
                qos: 1,
                retain: false,
                class: Class::Telemetry,
                device: r.device.clone(),
            })
            .await
            .expect("enqueue");
    }
    store.flush().await.expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let written = match (io_before, write_bytes()) {
        (Some(a), Some(b)) => format!("{:.0} disk bytes/reading", (b - a) as f64 / n as f64),
        _ => "disk bytes n/a".into(),
    };
    println!(
        "ingest: {n} readings normalized and committed in {secs:.2}s = {:.0} readings/s (payload {:.0} B/reading, {written})",
        n as f64 / secs,
        payload_bytes as f64 / n as f64
    );
    store.close().await;
}

const DEVICES: [&str; 10] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"];

async fn drain(n: u64, port: u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(dir.path(), Duration::from_millis(200), Caps::NONE).expect("open store");
    let payload = br#"{"value":21.53,"unit":"degC","ts":"2026-11-22T10:00:00.123Z","quality":"good","seq":1842}"#;
    for i in 0..n {
        store
            .enqueue(Outgoing {
                topic: format!("bench/gw/{}/temperature", DEVICES[(i % 10) as usize]),
                payload: bytes::Bytes::from_static(payload),
                qos: 1,
                retain: false,
                class: Class::Telemetry,
                device: String::new(),
            })
            .await
            .expect("enqueue");
    }
    store.flush().await.expect("flush");
    let cfg = UplinkConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: format!("edgegate-bench-{}", std::process::id()),
        username: None,
        password: None,
        keepalive: Duration::from_secs(30),
        qos: 1,
        forward: vec![],
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        max_inflight: arg("--inflight", 100) as u16,
        failover: vec![],
        tls: None,
        replay_rate: 0,
    };
    let stop = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(
        Uplink::new(cfg, "bench/gw/status".into(), store.clone())
            .expect("uplink")
            .run(stop.clone()),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let left = store.stats().await.expect("stats").rows;
        if left == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            println!("drain: gave up with {left} messages left");
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "drain: {n} buffered messages delivered at QoS 1 and deleted in {secs:.2}s = {:.0} msg/s",
        n as f64 / secs
    );
    stop.cancel();
    let _ = task.await;
    store.close().await;
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benches as tests; keep that instant and quiet.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("EDGEGATE_BENCH").is_err() {
        return;
    }
    ingest(arg("--readings", 200_000)).await;
    let port = arg("--broker-port", 0);
    if port != 0 {
        drain(arg("--backlog", 100_000), port as u16).await;
    }
}

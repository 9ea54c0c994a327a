//! Throughput of the data path, as `bench/run.sh` drives it:
//! - ingest: readings/s through normalize -> outbox commit (WAL, synchronous=FULL, batched);
//! - drain: messages/s from a full outbox to an MQTT broker at QoS 1, until the outbox is empty.
//!
//! - paced: readings at a steady `--rate` per second for `--seconds`, for disk bytes per reading
//!   at a realistic rate (an SD card's wear comes from small commits, not from bulk);
//! - live latency: while the backlog drains, live readings at `--live-rate` per second, and the
//!   time from their commit request to their arrival at a subscriber (p50/p99/max).
//!
//! Usage: pipeline [--readings N] [--backlog N] [--broker-port PORT] [--rate R --seconds S]
//!                 [--live-rate R] [--inflight N] [--commit-ms MS] [--backlog-qos2 N]
//!                 [--only ingest|paced|drain|drain2]
//! Without --broker-port only ingest (and paced, if --seconds) is measured.

use std::time::{Duration, Instant, SystemTime};

use edgegate::normalize::Normalizer;
use edgegate::normalize::PointConfig;
use edgegate::reading::{Quality, Reading};
use edgegate::store::{Caps, Class, Outgoing, Store};
use edgegate::uplink::Uplink;
use edgegate::uplink::UplinkConfig;
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--commit-ms` (default 200, the config default): the outbox's commit interval.
fn commit_interval() -> Duration {
    Duration::from_millis(arg("--commit-ms", 200))
}

/// Bytes this process has caused to be written to storage so far.
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Ten temperature points, as a site would configure them.
fn normalizer() -> Normalizer {
    let points = (0..10).map(|i| {
        let p = PointConfig {
            unit: Some("degC".into()),
            valid_min: Some(-40.0),
            valid_max: Some(85.0),
            ..PointConfig::default()
        };
        (DEVICES[i], "temperature", p)
    });
    Normalizer::with_points("site", "gw", "{site}/{gateway}/{device}/{quantity}", points)
}

/// The `i`th reading of the ten benchmark devices, normalized into an outbox message.
fn reading(norm: &mut Normalizer, store: &Store, i: u64) -> Option<Outgoing> {
    let r = Reading {
        device: DEVICES[(i % 10) as usize].to_string(),
        quantity: "temperature".into(),
        value: 20.0 + (i % 100) as f64 / 10.0,
        unit: Some("degC"),
        ts: SystemTime::now(),
        quality: Quality::Good,
    };
    let m = norm.process(&r, || store.next_seq())?;
    // As the forward rules hand it over: the outbox writes the fields as a small row.
    Some(Outgoing {
        topic: m.topic,
        payload: m.payload,
        qos: 1,
        retain: false,
        class: Class::Telemetry,
        device: r.device,
        sample: Some(m.sample),
    })
}

async fn ingest(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), commit_interval(), Caps::NONE).expect("open store");
    let mut norm = normalizer();
    let io_before = write_bytes();
    let mut payload_bytes = 0u64;
    let start = Instant::now();
    for i in 0..n {
        let Some(out) = reading(&mut norm, &store, i) else {
            continue;
        };
        payload_bytes += out.payload.len() as u64;
        store.enqueue(out).await.expect("enqueue");
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

/// Readings at `rate` per second for `seconds`, through normalize into the outbox at the default
/// 200 ms commit interval; reports disk bytes written per reading.
async fn paced(rate: u64, seconds: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), commit_interval(), Caps::NONE).expect("open store");
    let mut norm =
        Normalizer::with_points("site", "gw", "{site}/{gateway}/{device}/{quantity}", []);
    let io_before = write_bytes();
    let mut payload_bytes = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate as f64 / 100.0).max(0.0);
    let mut owed = 0.0;
    let mut n = 0u64;
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        tick.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let Some(out) = reading(&mut norm, &store, n) else {
                continue;
            };
            payload_bytes += out.payload.len() as u64;
            store.enqueue(out).await.expect("enqueue");
            n += 1;
        }
    }
    store.flush().await.expect("flush");
    let written = match (io_before, write_bytes()) {
        (Some(a), Some(b)) => (b - a) as f64 / n as f64,
        _ => f64::NAN,
    };
    let payload = payload_bytes as f64 / n as f64;
    println!(
        "paced: {n} readings at {rate}/s over {seconds}s: {written:.0} disk bytes/reading for a {payload:.0} B payload ({:.1}x)",
        written / payload
    );
    store.close().await;
}

const DEVICES: [&str; 10] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"];

async fn drain(n: u64, port: u16, qos: u8) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), commit_interval(), Caps::NONE).expect("open store");
    // Readings as an outage leaves them: small rows, whose payloads are rendered as they are sent.
    let mut norm = normalizer();
    for i in 0..n {
        let Some(mut out) = reading(&mut norm, &store, i) else {
            continue;
        };
        out.qos = qos;
        store.enqueue(out).await.expect("enqueue");
    }
    store.flush().await.expect("flush");
    let cfg = UplinkConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: format!("edgegate-bench-{}-{qos}", std::process::id()),
        username: None,
        password: None,
        keepalive: Duration::from_secs(30),
        qos,
        forward: vec![],
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        max_inflight: arg("--inflight", 100) as u16,
        failover: vec![],
        tls: None,
        replay_rate: 0,
        live_max_delay: Duration::from_secs(1),
    };
    let backlog_end = *store.committed().borrow();
    let live_rate = arg("--live-rate", 0);
    let latencies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let live = if live_rate > 0 {
        Some(live_readings(store.clone(), port, live_rate, latencies.clone()).await)
    } else {
        None
    };
    // 1 -> 1 like the peer: a subscriber takes every drained message from the broker.
    let received = count_arrivals(port, "site/gw/+/temperature", qos).await;
    let stop = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(
        Uplink::new(cfg, "bench/gw/status".into(), store.clone())
            .expect("uplink")
            .run(stop.clone()),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let left = store
            .fetch_range(0, backlog_end, None, 1)
            .await
            .expect("fetch")
            .len();
        if left == 0 && received.load(std::sync::atomic::Ordering::Relaxed) >= n {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            println!("drain: gave up with {left} messages left");
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "drain: {n} buffered messages delivered at QoS {qos} to a subscriber and deleted in {secs:.2}s = {:.0} msg/s",
        n as f64 / secs
    );
    if let Some(producer) = live {
        producer.abort();
        let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "live during drain: {} readings at {live_rate}/s, latency enqueue->subscriber p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.len(),
            q(0.50),
            q(0.99),
            l.last().copied().unwrap_or(f64::NAN)
        );
    }
    stop.cancel();
    let _ = task.await;
    store.close().await;
}

/// A subscriber to `filter` at `qos` that counts what it receives.
async fn count_arrivals(
    port: u16,
    filter: &str,
    qos: u8,
) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(
        format!("bench-sink-{}-{qos}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    // Nagle on a subscriber's small acknowledgements stalls QoS 2 at a few hundred a second.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    let qos = if qos == 2 {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    };
    client.subscribe(filter, qos).await.expect("subscribe");
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = events.poll().await {
            break;
        }
    }
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = ev {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    count
}

/// Subscribes to the live topic, then produces live readings carrying their enqueue time; each
/// arrival's latency goes into `latencies` (ms). Returns the producer task.
async fn live_readings(
    store: Store,
    port: u16,
    rate: u64,
    latencies: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
) -> tokio::task::JoinHandle<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(
        format!("bench-live-{}-{}", std::process::id(), fastrand::u32(..)),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    // Nagle on a subscriber's small acknowledgements stalls QoS 2 at a few hundred a second.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    client
        .subscribe("bench/live/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let epoch = Instant::now();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = events.poll().await {
            break;
        }
    }
    tokio::spawn(async move {
        let _client = client;
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let sent: Option<u64> = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse().ok());
                if let (Some(sent), Ok(mut l)) = (sent, latencies.lock()) {
                    let now = epoch.elapsed().as_micros() as u64;
                    l.push(now.saturating_sub(sent) as f64 / 1000.0);
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        loop {
            tick.tick().await;
            let sent = epoch.elapsed().as_micros() as u64;
            let out = Outgoing {
                topic: "bench/live/d0/temperature".into(),
                payload: bytes::Bytes::from(sent.to_string()),
                qos: 1,
                retain: false,
                class: Class::Telemetry,
                device: "d0".into(),
                sample: None,
            };
            if store.enqueue(out).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benches as tests; keep that instant and quiet.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("EDGEGATE_BENCH").is_err() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |what: &str| only.as_deref().is_none_or(|o| o == what);
    println!("commit interval: {:?}", commit_interval());
    if wanted("ingest") {
        ingest(arg("--readings", 200_000)).await;
    }
    let seconds = arg("--seconds", 0);
    if seconds > 0 && wanted("paced") {
        paced(arg("--rate", 100), seconds).await;
    }
    let port = arg("--broker-port", 0);
    if port != 0 && wanted("drain") {
        drain(arg("--backlog", 100_000), port as u16, 1).await;
    }
    let backlog_qos2 = arg("--backlog-qos2", 0);
    if port != 0 && backlog_qos2 > 0 && wanted("drain2") {
        drain(backlog_qos2, port as u16, 2).await;
    }
}

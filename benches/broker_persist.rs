//! What keeping persistent sessions and retained messages in the store costs a publisher.
//!
//! The local broker in process, once without a store (sessions in memory only: the behaviour
//! before persistence) and once with the gateway's store (a real SQLite file, the default 200 ms
//! commit interval), alternating, in the same run:
//! - offline: one persistent session subscribed to `load/#` at QoS 1 and offline, so every
//!   message is queued for it (and, with the store, written; once its queue holds
//!   `broker.max_queued_messages` each newcomer also evicts, and deletes, the oldest);
//! - retained: the same, every message retained on one of 1000 topics (a write per message).
//!
//! One TCP publisher writes `--messages N` QoS 1 PUBLISH packets (64-byte payloads) as fast as
//! the broker takes them while another task reads the PUBACKs; msg/s from the first write to
//! the last PUBACK. Then the store's flush time is measured: the last commit's backlog.
//!
//! - paced (with the store only): what the retained store costs the disk at a sensor-like rate:
//!   `--paced-rate` retained QoS 1 messages per second (JSON-sized 96-byte payloads) over 100
//!   topics, in process, for `--paced-seconds`; bytes the process wrote (`/proc/self/io`
//!   `write_bytes`: the database and its WAL) per message. Twice: published as a client's
//!   (`Bus::publish`, each change written with the next commit), and as the gateway's own
//!   readings (`Bus::publish_reading`, `buffer.retained_flush` 60 s, the clean stop's flush
//!   included).
//!
//! Usage: EDGEGATE_BENCH=1 cargo bench --bench broker_persist -- [--messages N] [--rounds R]
//!        [--paced-rate R] [--paced-seconds S]

use std::time::{Duration, Instant};

use edgegate::bus::BrokerConfig;
use edgegate::bus::Bus;
use edgegate::store::{Caps, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn num(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn field(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![header];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        v.push(b);
        if len == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

fn connect(id: &str, clean: bool) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.extend([4, if clean { 2 } else { 0 }, 0, 0]);
    body.extend(field(id.as_bytes()));
    packet(0x10, &body)
}

async fn client(addr: std::net::SocketAddr, id: &str, clean: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&connect(id, clean)).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[3], 0, "CONNACK {connack:?}");
    s
}

/// Messages per second from the first PUBLISH written to the last PUBACK read.
async fn run(with_store: bool, retained: bool, messages: usize) -> (f64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let store = Store::open(dir.path(), Duration::from_millis(200), Caps::NONE).unwrap();
    let bus = Bus::start_with_store(
        &cfg,
        with_store.then(|| store.clone()),
        Duration::ZERO,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = bus.local_addr();

    let mut sub = client(addr, "offline", false).await;
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(field(b"load/#"));
    body.push(1);
    sub.write_all(&packet(0x82, &body)).await.unwrap();
    let mut suback = [0u8; 5];
    sub.read_exact(&mut suback).await.unwrap();
    sub.write_all(&[0xe0, 0]).await.unwrap();
    let _ = sub.read(&mut suback).await;

    let publ = client(addr, "pub", true).await;
    let (mut rd, mut wr) = publ.into_split();
    let payload = [0x5au8; 64];
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < messages * 4 {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got / 4
    });
    let mut batch = Vec::with_capacity(64 * 1024);
    for i in 0..messages {
        let topic = format!("load/{}", i % 1000);
        let mut body = field(topic.as_bytes());
        body.extend_from_slice(&((i % 65_535 + 1) as u16).to_be_bytes());
        body.extend_from_slice(&payload);
        batch.extend(packet(0x32 | u8::from(retained), &body));
        if batch.len() >= 60 * 1024 {
            wr.write_all(&batch).await.unwrap();
            batch.clear();
        }
    }
    wr.write_all(&batch).await.unwrap();
    let acked = reader.await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(acked, messages, "PUBACKs");
    let flush = Instant::now();
    store.flush().await.unwrap();
    let flush = flush.elapsed();
    shutdown.cancel();
    bus.closed().await;
    drop(bus);
    store.close().await;
    (messages as f64 / elapsed.as_secs_f64(), flush)
}

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes written per retained message at `rate` messages/s over 100 topics; as the gateway's
/// own readings, coalesced, when `own`.
async fn paced(rate: usize, seconds: usize, own: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let store = Store::open(dir.path(), Duration::from_millis(200), Caps::NONE).unwrap();
    let flush = Duration::from_secs(if own { 60 } else { 0 });
    let bus = Bus::start_with_store(&cfg, Some(store.clone()), flush, shutdown.clone())
        .await
        .unwrap();
    let before = write_bytes();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    for i in 0..rate * seconds {
        tick.tick().await;
        let payload = format!(
            "{{\"device\":\"tank-{:03}\",\"value\":{:.2},\"unit\":\"degC\",\"seq\":{i:>10},\"ts\":1764489600000}}",
            i % 100,
            (i % 997) as f64 / 10.0
        );
        let msg = edgegate::bus::Message {
            topic: format!("site/gw/tank-{:03}/temperature", i % 100),
            payload: payload.into(),
            qos: 1,
            retain: true,
            props: None,
            origin: None,
        };
        match own {
            true => bus.publish_reading(msg).await,
            false => bus.publish(msg).await,
        }
    }
    // A clean stop: the coalesced copies are written too.
    bus.flush_retained();
    store.flush().await.unwrap();
    let written = write_bytes() - before;
    shutdown.cancel();
    bus.closed().await;
    drop(bus);
    store.close().await;
    written as f64 / (rate * seconds) as f64
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benches as tests; keep that instant and quiet.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("EDGEGATE_BENCH").is_err() {
        return;
    }
    let messages = num("--messages", 200_000);
    let rounds = num("--rounds", 3);
    println!("{messages} QoS 1 messages, 64-byte payloads, one persistent subscriber offline");
    // `--rounds 0`: only the paced case.
    for retained in [false, true].into_iter().filter(|_| rounds > 0) {
        let case = if retained { "retained" } else { "offline" };
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, with_store) in [false, true].into_iter().enumerate() {
                let (rate, flush) = run(with_store, retained, messages).await;
                rates[i].push(rate);
                println!(
                    "{case:8} store={with_store:5}: {rate:>10.0} msg/s (flush afterwards {flush:?})"
                );
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (without, with) = (median(&mut rates[0]), median(&mut rates[1]));
        println!(
            "{case:8} median: without store {without:.0} msg/s, with store {with:.0} msg/s ({:.1}% of it)",
            100.0 * with / without
        );
    }
    let (rate, seconds) = (num("--paced-rate", 100), num("--paced-seconds", 20));
    for own in [false, true] {
        let per = paced(rate, seconds, own).await;
        let how = match own {
            true => "own readings, retained_flush 60s",
            false => "client publishes, every commit",
        };
        println!(
            "paced    {rate} retained msg/s for {seconds} s ({how}): {per:.0} bytes written per message"
        );
    }
}

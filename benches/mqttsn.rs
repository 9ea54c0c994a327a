//! The MQTT-SN gateway of the real binary, loaded over UDP from this process:
//! - clients: `--clients N` UDP sockets, each a client that CONNECTs, REGISTERs a topic and
//!   publishes one QoS 1 message; held means every one then still answers PINGREQ with PINGRESP.
//!   The gateway's resident memory is read from /proc.
//! - qos0: QoS 0 PUBLISH datagrams from `--publishers P` clients at `--rate R` per second for
//!   `--seconds S`, counted at an MQTT subscriber (rumqttc, QoS 0) on the gateway's local broker.
//!   Each rate of `--rates a,b,c` is one step; received/s and the loss are reported per step.
//!
//! Usage: EDGEGATE_BENCH=1 cargo bench --bench mqttsn -- [--clients N] [--rates a,b,c]
//!        [--seconds S] [--publishers P]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[path = "common/mod.rs"]
mod common;
use common::{free_port, rss_kib};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Gw {
    child: Child,
    udp: SocketAddr,
    broker: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway() -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let broker = free_port();
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "site: bench\ngateway: gw\nbroker:\n  listen: 127.0.0.1:{broker}\nbuffer:\n  dir: data\nmqttsn:\n  listen: [\"127.0.0.1:{udp_port}\"]\n  max_clients: 100000\n  max_rate: 1000000\n"
    );
    std::fs::write(dir.path().join("site.yaml"), yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgegate"))
        .args(["run", "--config", "site.yaml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start edgegate");
    let udp: SocketAddr = format!("127.0.0.1:{udp_port}").parse().unwrap();
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..100 {
        probe.send_to(&[3, 1, 0], udp).unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            return Gw {
                child,
                udp,
                broker,
                _dir: dir,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("gateway did not answer SEARCHGW");
}

fn connect(id: &str, keepalive: u16) -> Vec<u8> {
    let mut p = vec![(6 + id.len()) as u8, 0x04, 0x04, 0x01];
    p.extend_from_slice(&keepalive.to_be_bytes());
    p.extend_from_slice(id.as_bytes());
    p
}

fn register(topic: &str, msg_id: u16) -> Vec<u8> {
    let mut p = vec![(6 + topic.len()) as u8, 0x0A, 0, 0];
    p.extend_from_slice(&msg_id.to_be_bytes());
    p.extend_from_slice(topic.as_bytes());
    p
}

fn publish(flags: u8, topic_id: u16, msg_id: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![(7 + data.len()) as u8, 0x0C, flags];
    p.extend_from_slice(&topic_id.to_be_bytes());
    p.extend_from_slice(&msg_id.to_be_bytes());
    p.extend_from_slice(data);
    p
}

/// Sends `req` on every socket in windows of `window`, retrying the unanswered ones, until each
/// got a reply of type `want`; returns the replies.
fn round(
    socks: &[UdpSocket],
    gw: SocketAddr,
    req: impl Fn(usize) -> Vec<u8>,
    want: u8,
) -> Vec<Vec<u8>> {
    let mut replies: Vec<Option<Vec<u8>>> = vec![None; socks.len()];
    let window = 500;
    for attempt in 0..5 {
        let pending: Vec<usize> = (0..socks.len()).filter(|i| replies[*i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        if attempt > 0 {
            eprintln!("  retrying {} clients", pending.len());
        }
        for chunk in pending.chunks(window) {
            for &i in chunk {
                let _ = socks[i].send_to(&req(i), gw);
            }
            let mut buf = [0u8; 64];
            for &i in chunk {
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline {
                    match socks[i].recv_from(&mut buf) {
                        Ok((n, _)) if n >= 2 && buf[1] == want => {
                            replies[i] = Some(buf[..n].to_vec());
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        }
    }
    replies.into_iter().map(|r| r.unwrap_or_default()).collect()
}

fn clients(n: usize) {
    let gw = start_gateway();
    let idle = rss_kib(gw.child.id());
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind (raise ulimit -n?)");
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    let acks = round(&socks, gw.udp, |i| connect(&format!("c{i}"), 600), 0x05);
    let connect_s = t.elapsed().as_secs_f64();
    let connected = acks.iter().filter(|a| a.get(2) == Some(&0)).count();
    let regs = round(
        &socks,
        gw.udp,
        |i| register(&format!("bench/c{i}/t"), 1),
        0x0B,
    );
    let pubacks = round(
        &socks,
        gw.udp,
        |i| {
            let r = &regs[i];
            let id = if r.len() == 7 {
                u16::from_be_bytes([r[2], r[3]])
            } else {
                0
            };
            publish(0x20, id, 2, b"1")
        },
        0x0D,
    );
    let published = pubacks.iter().filter(|a| a.get(6) == Some(&0)).count();
    let pings = round(&socks, gw.udp, |_| vec![0x02, 0x16], 0x17);
    let held = pings.iter().filter(|p| !p.is_empty()).count();
    let rss = rss_kib(gw.child.id());
    println!(
        "clients: {n} sockets; connected {connected} in {connect_s:.2} s ({:.0}/s); QoS 1 publish acknowledged {published}; held (PINGRESP after all) {held}",
        connected as f64 / connect_s
    );
    println!(
        "gateway RSS: idle {} KiB, with {held} clients {} KiB ({:.2} KiB per client)",
        idle,
        rss,
        (rss.saturating_sub(idle)) as f64 / held.max(1) as f64
    );
}

async fn qos0(rates: &[u64], seconds: u64, publishers: usize) {
    let gw = start_gateway();
    let got = Arc::new(AtomicU64::new(0));
    // Nanoseconds from `base` to the latest arrival.
    let base = Instant::now();
    let last_at = Arc::new(AtomicU64::new(0));
    let last_at_w = last_at.clone();
    let mut opts = MqttOptions::new("bench-sub", "127.0.0.1", gw.broker);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let counter = got.clone();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("load/#", QoS::AtMostOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    last_at_w.store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    ready_rx.await.unwrap();
    let socks: Vec<UdpSocket> = (0..publishers)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
        .collect();
    round(&socks, gw.udp, |i| connect(&format!("p{i}"), 600), 0x05);
    let regs = round(
        &socks,
        gw.udp,
        |i| register(&format!("load/p{i}/value"), 1),
        0x0B,
    );
    let datagrams: Vec<Vec<u8>> = regs
        .iter()
        .map(|r| publish(0x00, u16::from_be_bytes([r[2], r[3]]), 0, b"21.5"))
        .collect();
    for &rate in rates {
        let before = got.load(Ordering::Relaxed);
        let total = rate * seconds;
        let socks2: Vec<UdpSocket> = socks.iter().map(|s| s.try_clone().unwrap()).collect();
        let dg = datagrams.clone();
        let udp = gw.udp;
        let t0 = Instant::now();
        let sender = std::thread::spawn(move || {
            // Paced in 1 ms slices, round robin over the publishers.
            let mut sent = 0u64;
            let start = Instant::now();
            while sent < total {
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                while sent < due {
                    let i = (sent as usize) % socks2.len();
                    let _ = socks2[i].send_to(&dg[i], udp);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            start.elapsed()
        });
        let send_time = tokio::task::spawn_blocking(move || sender.join().unwrap())
            .await
            .unwrap();
        // Wait for the tail to drain.
        let mut last = got.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = got.load(Ordering::Relaxed);
            if now == last || now - before >= total {
                break;
            }
            last = now;
        }
        let received = got.load(Ordering::Relaxed) - before;
        // From the first send to the last arrival.
        let elapsed = Duration::from_nanos(last_at.load(Ordering::Relaxed))
            .saturating_sub(t0.duration_since(base))
            .as_secs_f64();
        println!(
            "qos0 offered {rate}/s for {seconds} s ({:.2} s to send): received {received}/{total} ({:.2}% lost), {:.0} msg/s at the subscriber, gateway RSS {} KiB",
            send_time.as_secs_f64(),
            100.0 * (total - received.min(total)) as f64 / total as f64,
            received as f64 / elapsed.max(0.001),
            rss_kib(gw.child.id())
        );
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benches as tests; keep that instant and quiet.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("EDGEGATE_BENCH").is_err() {
        return;
    }
    let n = num("--clients", 10_000) as usize;
    if n > 0 {
        tokio::task::spawn_blocking(move || clients(n))
            .await
            .unwrap();
    }
    let rates: Vec<u64> = arg("--rates")
        .unwrap_or_else(|| "20000,50000,80000".into())
        .split(',')
        .filter_map(|r| r.parse().ok())
        .collect();
    qos0(&rates, num("--seconds", 5), num("--publishers", 8) as usize).await;
}

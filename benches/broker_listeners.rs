//! The local broker's three listeners (TCP, WebSocket, TLS) side by side, and Debian's
//! Mosquitto with the same three listeners as the peer, in the same run, both as processes:
//! - qos0: QoS 0 1->1, 64-byte payloads: one publisher writes `--messages N` PUBLISH packets as
//!   fast as the transport takes them, one subscriber on the same transport counts them;
//!   delivered/s from the first write to the last delivery.
//! - idle: `--idle N` connections per transport that sent CONNECT (keepalive 0) and got CONNACK;
//!   the broker's resident memory growth per connection, read from /proc.
//!
//! Usage: EDGEGATE_BENCH=1 cargo bench --bench broker_listeners -- [--messages N] [--idle N]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[path = "common/mod.rs"]
mod common;
use common::{free_port, peak_kib, rss_kib};

fn num(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl command.
fn make_pki(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ca",
    ]);
    run(&a);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=bench",
    ]);
    run(&a);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    for f in ["ca.pem", "server.pem", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(f);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Ws,
    Tls,
}

struct Broker {
    name: &'static str,
    child: Child,
    ports: [u16; 3],
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    fn port(&self, kind: Kind) -> u16 {
        self.ports[kind as usize]
    }

    async fn wait_ready(&self) {
        for port in self.ports {
            let mut tries = 0;
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tries += 1;
                assert!(tries < 200, "{} not listening on {port}", self.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn start_edgegate(dir: &std::path::Path) -> Broker {
    let ports = [free_port(), free_port(), free_port()];
    let [tcp, ws, tls] = ports;
    let d = dir.display();
    let yaml = format!(
        "site: bench\ngateway: gw\nbroker:\n  listen: 127.0.0.1:{tcp}\n  websocket: 127.0.0.1:{ws}\n  tls:\n    listen: 127.0.0.1:{tls}\n    cert: {d}/server.pem\n    key: {d}/server.key\n  max_connections: 100000\n  max_queued_messages: 1000000\n  max_queued_bytes: 512MiB\n  sys_interval: 0s\nbuffer:\n  dir: data\n"
    );
    std::fs::write(dir.join("site.yaml"), yaml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edgegate"))
        .args(["run", "--config", "site.yaml"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start edgegate");
    Broker {
        name: "edgegate",
        child,
        ports,
    }
}

fn start_mosquitto(dir: &std::path::Path) -> Broker {
    let ports = [free_port(), free_port(), free_port()];
    let [tcp, ws, tls] = ports;
    let d = dir.display();
    let conf = format!(
        "allow_anonymous true\nmax_queued_messages 1000000\nlistener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\nlistener {tls} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
    );
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto (apt-get install mosquitto)");
    Broker {
        name: "mosquitto",
        child,
        ports,
    }
}

enum Conn {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    async fn open(kind: Kind, port: u16, tls: &tokio_rustls::TlsConnector) -> Conn {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let _ = tcp.set_nodelay(true);
        match kind {
            Kind::Tcp => Conn::Tcp(tcp),
            Kind::Ws => {
                let mut req = format!("ws://127.0.0.1:{port}/")
                    .into_client_request()
                    .unwrap();
                req.headers_mut()
                    .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
                let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.expect("ws");
                Conn::Ws(Box::new(ws))
            }
            Kind::Tls => {
                let name =
                    rustls::pki_types::ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
                Conn::Tls(Box::new(tls.connect(name, tcp).await.expect("tls")))
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Tcp(s) => s.write_all(bytes).await.unwrap(),
            Conn::Ws(ws) => ws.send(Message::binary(bytes.to_vec())).await.unwrap(),
            Conn::Tls(s) => {
                s.write_all(bytes).await.unwrap();
                s.flush().await.unwrap();
            }
        }
    }

    /// Appends what arrives next; false at the end of the stream.
    async fn recv(&mut self, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 65536];
        let n = match self {
            Conn::Tcp(s) => s.read(&mut chunk).await.unwrap_or(0),
            Conn::Tls(s) => s.read(&mut chunk).await.unwrap_or(0),
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        return true;
                    }
                    Some(Ok(_)) => continue,
                    _ => return false,
                }
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// CONNECT (3.1.1, clean, keepalive 0) and its CONNACK.
    async fn handshake(&mut self, id: &str) {
        let mut p = vec![
            0x10,
            (12 + id.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            2,
            0,
            0,
        ];
        p.extend([0, id.len() as u8]);
        p.extend(id.as_bytes());
        self.send(&p).await;
        let mut buf = Vec::new();
        while buf.len() < 4 {
            assert!(self.recv(&mut buf).await, "closed before CONNACK");
        }
        assert_eq!(&buf[..4], [0x20, 2, 0, 0], "CONNACK");
    }
}

/// Counts whole PUBLISH packets in `buf` from `*at`, advancing past them.
fn count_publishes(buf: &[u8], at: &mut usize) -> usize {
    let mut n = 0;
    loop {
        let rest = &buf[*at..];
        let (mut len, mut i) = (0usize, 1);
        loop {
            let Some(b) = rest.get(i) else { return n };
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if rest.len() < i + len {
            return n;
        }
        if rest[0] & 0xf0 == 0x30 {
            n += 1;
        }
        *at += i + len;
    }
}

async fn qos0(b: &Broker, kind: Kind, tls: &tokio_rustls::TlsConnector, n: usize) -> (usize, f64) {
    let port = b.port(kind);
    let mut sub = Conn::open(kind, port, tls).await;
    sub.handshake("bench-sub").await;
    sub.send(&[0x82, 8, 0, 1, 0, 3, b'b', b'/', b't', 0]).await;
    let mut buf = Vec::new();
    while buf.len() < 5 {
        assert!(sub.recv(&mut buf).await);
    }
    assert_eq!(&buf[..5], [0x90, 3, 0, 1, 0], "SUBACK");
    let mut publ = Conn::open(kind, port, tls).await;
    publ.handshake("bench-pub").await;
    let mut packet = vec![0x30, 2 + 3 + 64, 0, 3, b'b', b'/', b't'];
    packet.extend([b'x'; 64]);
    let batch = 1000;
    let chunk: Vec<u8> = packet.repeat(batch);
    let start = Instant::now();
    let counter = tokio::spawn(async move {
        let (mut buf, mut at, mut got) = (Vec::new(), 0, 0);
        let mut last = Instant::now();
        while got < n {
            match tokio::time::timeout(Duration::from_secs(5), sub.recv(&mut buf)).await {
                Ok(true) => {
                    got += count_publishes(&buf, &mut at);
                    buf.drain(..at);
                    at = 0;
                    last = Instant::now();
                }
                _ => break,
            }
        }
        (got, last)
    });
    for _ in 0..n / batch {
        publ.send(&chunk).await;
    }
    let (got, last) = counter.await.unwrap();
    (got, got as f64 / (last - start).as_secs_f64())
}

/// (connections that got CONNACK within 5 s each, KiB of broker RSS per connection).
async fn idle(b: &Broker, kind: Kind, tls: &tokio_rustls::TlsConnector, n: usize) -> (usize, f64) {
    let pid = b.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let open = async {
            let mut c = Conn::open(kind, b.port(kind), tls).await;
            c.handshake(&format!("idle-{i}")).await;
            c
        };
        match tokio::time::timeout(Duration::from_secs(5), open).await {
            Ok(c) => conns.push(c),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rss_kib(pid);
    let held = conns.len();
    drop(conns);
    (
        held,
        after.saturating_sub(before) as f64 / held.max(1) as f64,
    )
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benches as tests; keep that instant and quiet.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("EDGEGATE_BENCH").is_err() {
        return;
    }
    let messages = num("--messages", 200_000);
    let idle_n = num("--idle", 1000);
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls::pki_types::pem::PemObject;
        for c in
            rustls::pki_types::CertificateDer::pem_file_iter(dir.path().join("ca.pem")).unwrap()
        {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    println!("QoS 0 1->1, 64-byte payloads, {messages} messages; idle: {idle_n} connections");
    // A fresh broker for each transport: memory freed by an earlier run would hide growth.
    for start in [start_edgegate, start_mosquitto] {
        for kind in [Kind::Tcp, Kind::Ws, Kind::Tls] {
            let b = start(dir.path());
            b.wait_ready().await;
            let rss_idle = rss_kib(b.child.id());
            let (held, kib) = idle(&b, kind, &tls, idle_n).await;
            let run = qos0(&b, kind, &tls, messages);
            let (got, rate) = tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .unwrap_or((0, 0.0));
            println!(
                "{:<9} {:<4} qos0 {:>9.0} msg/s ({got}/{messages} delivered, peak RSS {:>6} KiB) | idle {kib:>5.1} KiB/conn ({held}/{idle_n} held, RSS at start {rss_idle} KiB)",
                b.name,
                format!("{kind:?}").to_lowercase(),
                rate,
                peak_kib(b.child.id()),
            );
        }
    }
}

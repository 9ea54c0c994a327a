//! The local broker's WebSocket (subprotocol `mqtt`) and TLS listeners: raw MQTT bytes in
//! binary frames, the upgrade refused without `mqtt`, TLS trusted only through the right CA,
//! and `edgegate check` pointing at bad listener settings.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use edgegate::bus::{Bus, Message as BusMessage};
use edgegate::config::BrokerConfig;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

fn wait() -> Duration {
    Duration::from_secs(if emulated() { 30 } else { 10 })
}

/// CONNECT, MQTT 3.1.1, clean session, keepalive 0.
fn connect(id: &str) -> Vec<u8> {
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
    p
}

fn subscribe(pid: u8, filter: &str, qos: u8) -> Vec<u8> {
    let mut p = vec![
        0x82,
        (5 + filter.len()) as u8,
        0,
        pid,
        0,
        filter.len() as u8,
    ];
    p.extend(filter.as_bytes());
    p.push(qos);
    p
}

fn publish0(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x30,
        (2 + topic.len() + payload.len()) as u8,
        0,
        topic.len() as u8,
    ];
    p.extend(topic.as_bytes());
    p.extend(payload);
    p
}

async fn ws_handshake(
    addr: SocketAddr,
    protocol: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let tcp = timeout(wait(), TcpStream::connect(addr))
        .await
        .expect("TCP connect timed out")
        .expect("TCP connect failed");
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
    }
    let (ws, resp) = timeout(wait(), tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("WebSocket handshake timed out")?;
    assert_eq!(
        resp.headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok()),
        Some("mqtt"),
        "the broker must answer with the subprotocol it speaks"
    );
    Ok(ws)
}

/// An MQTT client over WebSocket that sees the broker's output as one byte stream.
struct WsClient {
    ws: WebSocketStream<TcpStream>,
    buf: Vec<u8>,
}

impl WsClient {
    async fn open(addr: SocketAddr) -> WsClient {
        let ws = ws_handshake(addr, Some("mqtt")).await.unwrap();
        WsClient {
            ws,
            buf: Vec::new(),
        }
    }

    /// Sends each slice as one binary message.
    async fn send_frames(&mut self, frames: &[&[u8]]) {
        for f in frames {
            self.ws
                .send(Message::binary(f.to_vec()))
                .await
                .expect("send");
        }
    }

    /// Reads messages until `n` bytes are buffered; returns them.
    async fn read(&mut self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + wait();
        while self.buf.len() < n {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out with {:02x?}", self.buf))
                .expect("WebSocket closed")
                .expect("WebSocket error");
            match msg {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected WebSocket message {other:?}"),
            }
        }
        self.buf.drain(..n).collect()
    }

    async fn expect(&mut self, want: &[u8]) {
        let got = self.read(want.len()).await;
        assert_eq!(got, want, "got {got:02x?}, want {want:02x?}");
    }

    /// The next whole packet: (first byte, body after the remaining length).
    async fn packet(&mut self) -> (u8, Vec<u8>) {
        let head = self.read(1).await[0];
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = self.read(1).await[0];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        (head, self.read(len).await)
    }
}

async fn ws_bus() -> (Bus, CancellationToken) {
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        websocket: Some("127.0.0.1:0".parse().unwrap()),
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    (bus, shutdown)
}

#[tokio::test]
async fn websocket_packets_span_frames_and_share_frames() {
    let (bus, shutdown) = ws_bus().await;
    let addr = bus.websocket_addr().expect("WebSocket listener");
    let mut inproc = bus.subscribe(&["a/#".to_string()], 8, false).unwrap();
    let mut c = WsClient::open(addr).await;

    // CONNECT split across two frames.
    let conn = connect("ws1");
    c.send_frames(&[&conn[..5], &conn[5..]]).await;
    c.expect(&[0x20, 2, 0, 0]).await;

    // SUBSCRIBE and the start of a PUBLISH in one frame, the rest of the PUBLISH in the next.
    let sub = subscribe(1, "a/#", 1);
    let publ = publish0("a/b", b"hi");
    let first: Vec<u8> = sub.iter().chain(&publ[..4]).copied().collect();
    c.send_frames(&[&first, &publ[4..]]).await;
    c.expect(&[0x90, 3, 0, 1, 1]).await;
    c.expect(&publ).await;
    let got = timeout(wait(), inproc.recv()).await.unwrap().unwrap();
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("a/b", &b"hi"[..]));

    // Two whole packets in one frame: PINGREQ, then a PUBLISH.
    let publ2 = publish0("a/c", b"2");
    let both: Vec<u8> = [0xc0, 0].iter().chain(&publ2).copied().collect();
    c.send_frames(&[&both]).await;
    c.expect(&[0xd0, 0]).await;
    c.expect(&publ2).await;

    // From inside the gateway, QoS 1, acknowledged over the WebSocket.
    bus.publish(BusMessage {
        topic: "a/d".into(),
        payload: bytes::Bytes::from_static(b"in"),
        qos: 1,
        retain: false,
    })
    .await;
    let (head, body) = c.packet().await;
    assert_eq!(head, 0x32, "QoS 1 PUBLISH, got {body:02x?}");
    assert_eq!(&body[..5], b"\x00\x03a/d");
    assert_eq!(&body[7..], b"in");
    c.send_frames(&[&[0x40, 2, body[5], body[6]]]).await;

    // DISCONNECT: the broker closes the WebSocket.
    c.send_frames(&[&[0xe0, 0]]).await;
    let end = timeout(wait(), async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(m)) => assert!(!m.is_binary(), "data after DISCONNECT: {m:?}"),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "connection still open after DISCONNECT");
    shutdown.cancel();
    timeout(wait(), bus.closed()).await.unwrap();
}

#[tokio::test]
async fn websocket_without_mqtt_subprotocol_is_refused() {
    let (bus, shutdown) = ws_bus().await;
    let addr = bus.websocket_addr().unwrap();
    for offered in [None, Some("chat"), Some("mqttv3.1x, chat")] {
        match ws_handshake(addr, offered).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{offered:?}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
                assert!(body.contains("subprotocol `mqtt`"), "{offered:?}: {body}");
            }
            Err(e) => panic!("{offered:?}: expected an HTTP refusal, got {e}"),
            Ok(_) => panic!("{offered:?}: upgrade accepted without `mqtt`"),
        }
    }
    // Among others, `mqtt` is chosen; the listener still serves after the refusals.
    let ws = ws_handshake(addr, Some("chat, mqtt")).await.unwrap();
    let mut c = WsClient {
        ws,
        buf: Vec::new(),
    };
    c.send_frames(&[&connect("ws2")]).await;
    c.expect(&[0x20, 2, 0, 0]).await;
    assert_eq!(bus.stats().refused, 3);
    shutdown.cancel();
}

#[tokio::test]
async fn websocket_text_message_closes_the_connection() {
    let (bus, shutdown) = ws_bus().await;
    let mut c = WsClient::open(bus.websocket_addr().unwrap()).await;
    c.send_frames(&[&connect("ws3")]).await;
    c.expect(&[0x20, 2, 0, 0]).await;
    c.ws.send(Message::text("hello")).await.unwrap();
    let closed = timeout(wait(), async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a text message must close the connection");
    // Another client is unaffected.
    let mut other = WsClient::open(bus.websocket_addr().unwrap()).await;
    other.send_frames(&[&connect("ws4")]).await;
    other.expect(&[0x20, 2, 0, 0]).await;
    shutdown.cancel();
}

/// A test site with the given lines added under `broker:`.
fn site_with_broker(extra: &str) -> String {
    let local = free_port();
    site_yaml(local, free_port(), 1, 0, 50).replace(
        &format!("  listen: 127.0.0.1:{local}\n"),
        &format!("  listen: 127.0.0.1:{local}\n{extra}"),
    )
}

async fn port_open(port: u16) {
    let ok = wait_until(wait(), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(ok, "nothing listening on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_readings_reach_a_websocket_client() {
    let ws_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::new(
        dir.path(),
        &site_with_broker(&format!("  websocket: 127.0.0.1:{ws_port}\n")),
    );
    gw.start();
    port_open(ws_port).await;
    let mut c = WsClient::open(([127, 0, 0, 1], ws_port).into()).await;
    c.send_frames(&[
        &connect("dashboard"),
        &subscribe(7, "farm/gw1/+/temperature", 0),
    ])
    .await;
    c.expect(&[0x20, 2, 0, 0]).await;
    c.expect(&[0x90, 3, 0, 7, 0]).await;
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let (head, body) = c.packet().await;
        assert_eq!(
            head & 0xf0,
            0x30,
            "expected PUBLISH, got {head:02x} {body:02x?}"
        );
        let len = usize::from(body[0]) << 8 | usize::from(body[1]);
        let topic = std::str::from_utf8(&body[2..2 + len]).unwrap();
        assert_eq!(topic, "farm/gw1/temp-1/temperature");
        let reading: serde_json::Value = serde_json::from_slice(&body[2 + len..]).unwrap();
        assert_eq!(reading["unit"], "degC", "{reading}");
        seqs.push(reading["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

fn mosquitto_sub(port: u16, cafile: &str, count: &str, secs: &str) -> Output {
    let port = port.to_string();
    Command::new(find_program("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &port, "--cafile", cafile])
        .args([
            "-i",
            "tls-watch",
            "-t",
            "farm/#",
            "-v",
            "-C",
            count,
            "-W",
            secs,
        ])
        .output()
        .expect("run mosquitto_sub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_trusts_only_its_ca() {
    let pki = Pki::new();
    let tls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let tls = format!(
        "  tls:\n    listen: 127.0.0.1:{tls_port}\n    cert: {}\n    key: {}\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let mut gw = Gateway::new(dir.path(), &site_with_broker(&tls));
    gw.start();
    port_open(tls_port).await;

    let wrong = mosquitto_sub(tls_port, &pki.path("other-ca.pem"), "1", "5");
    assert!(!wrong.status.success(), "{wrong:?}");
    assert!(wrong.stdout.is_empty(), "{wrong:?}");
    let complaint = String::from_utf8_lossy(&wrong.stderr);
    assert!(complaint.contains("TLS error"), "{complaint}");

    let secs = if emulated() { "30" } else { "10" };
    let right = mosquitto_sub(tls_port, &pki.path("ca.pem"), "3", secs);
    let text = String::from_utf8_lossy(&right.stdout);
    assert!(right.status.success(), "{right:?}\n{}", gw.log());
    assert_eq!(text.lines().count(), 3, "{text}");
    for line in text.lines() {
        assert!(line.starts_with("farm/gw1/"), "{line}");
    }
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

/// `edgegate check` on a site with `extra` under `broker:`: (exit code, stderr, config path,
/// the config's text).
fn check(extra: &str) -> (Option<i32>, String, String, String) {
    let yaml = site_with_broker(extra);
    let (code, err, path) = check_yaml(&yaml);
    (code, err, path, yaml)
}

fn check_yaml(yaml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::new(dir.path(), yaml);
    let out = gateway_command()
        .args(["check", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, gw.config.display().to_string())
}

/// 1-based line of the first line of `yaml` that starts with `prefix`.
fn line_of(yaml: &str, prefix: &str) -> usize {
    1 + yaml
        .lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?}"))
}

#[test]
fn bad_listener_settings_fail_check_with_positions() {
    let pki = Pki::new();
    let tls = |cert: &str, key: &str| {
        format!(
            "  tls:\n    listen: 127.0.0.1:8883\n    cert: {}\n    key: {}\n",
            pki.path(cert),
            pki.path(key)
        )
    };
    // (broker lines, the line the error is on, what the error says)
    let cases = [
        (
            tls("nope.pem", "server.key"),
            "    cert:",
            vec!["broker.tls.cert", "cannot read", "nope.pem"],
        ),
        (
            tls("server.key", "server.key"),
            "    cert:",
            vec!["broker.tls.cert", "no PEM certificate"],
        ),
        (
            tls("server.pem", "nope.key"),
            "    key:",
            vec!["broker.tls.key", "cannot read", "nope.key"],
        ),
        (
            tls("server.pem", "server.pem"),
            "    key:",
            vec!["broker.tls.key", "not a PEM private key"],
        ),
        (
            tls("server.pem", "client.key"),
            "    key:",
            vec!["broker.tls.key", "do not fit together"],
        ),
        (
            format!(
                "  tls:\n    cert: {}\n    key: {}\n",
                pki.path("server.pem"),
                pki.path("server.key")
            ),
            "  tls:",
            vec!["broker.tls", "missing required key `listen`"],
        ),
        (
            "  websocket: localhost\n".into(),
            "  websocket:",
            vec!["broker.websocket", "not an IP address with a port"],
        ),
    ];
    for (extra, at, says) in cases {
        let (code, err, path, yaml) = check(&extra);
        assert_eq!(code, Some(2), "{extra}\n{err}");
        let pos = format!("{path}:{}:", line_of(&yaml, at));
        assert!(err.contains(&pos), "{extra}: want an error at {pos}\n{err}");
        for s in says {
            assert!(err.contains(s), "{extra}: want {s:?}\n{err}");
        }
    }
    // The same address as the TCP listener.
    let local = free_port();
    let yaml = site_yaml(local, free_port(), 1, 0, 50).replace(
        &format!("  listen: 127.0.0.1:{local}\n"),
        &format!("  listen: 127.0.0.1:{local}\n  websocket: 127.0.0.1:{local}\n"),
    );
    let (code, err, path) = check_yaml(&yaml);
    assert_eq!(code, Some(2), "{err}");
    let pos = format!("{path}:{}:", line_of(&yaml, "  websocket:"));
    assert!(
        err.contains(&pos) && err.contains("is already `broker.listen`"),
        "{err}"
    );
}

/// A rustls client trusting only `ca`, connected to the TLS listener at `addr`.
async fn tls_connect(
    addr: SocketAddr,
    ca: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::from(addr.ip());
    timeout(wait(), connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
}

#[tokio::test]
async fn tls_listener_speaks_mqtt_bytes_in_process() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(edgegate::bus::tls::TlsListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: pki.path("server.pem").into(),
            key: pki.path("server.key").into(),
        }),
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let addr = bus.tls_addr().expect("TLS listener");

    let refused = tls_connect(addr, &pki.path("other-ca.pem")).await;
    let Err(e) = refused else {
        panic!("a server certificate from an unknown CA was accepted");
    };
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // Plain MQTT on the TLS port gets no CONNACK.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(&connect("plain")).await.unwrap();
    let mut buf = [0u8; 64];
    match timeout(wait(), plain.read(&mut buf)).await {
        Ok(Ok(n)) => assert!(!buf[..n].starts_with(&[0x20]), "{:02x?}", &buf[..n]),
        Ok(Err(_)) => {}
        Err(_) => panic!("plain TCP on the TLS port was neither answered nor closed"),
    }

    let mut tls = tls_connect(addr, &pki.path("ca.pem")).await.unwrap();
    let mut packets = connect("tls1");
    packets.extend(subscribe(1, "t/#", 0));
    packets.extend(publish0("t/1", b"secret"));
    tls.write_all(&packets).await.unwrap();
    tls.flush().await.unwrap();
    let mut want = vec![0x20, 2, 0, 0, 0x90, 3, 0, 1, 0];
    want.extend(publish0("t/1", b"secret"));
    let mut got = vec![0u8; want.len()];
    timeout(wait(), tls.read_exact(&mut got))
        .await
        .expect("timed out")
        .unwrap();
    assert_eq!(got, want);
    shutdown.cancel();
    timeout(wait(), bus.closed()).await.unwrap();
}

#[test]
fn listeners_example_passes_check() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/broker-listeners.yaml"
    );
    let out = gateway_command()
        .args(["check", "--config", path])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

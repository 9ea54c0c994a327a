//! The local broker's WebSocket (subprotocol `mqtt`) and TLS listeners: raw MQTT bytes in
//! binary frames, the upgrade refused without `mqtt`, TLS trusted only through the right CA,
//! client certificates (and their CN as the ACL user), and `edgegate check` pointing at bad
//! listener settings.

mod support;

#[path = "broker_listeners/ws.rs"]
mod ws;

#[path = "broker_listeners/tls.rs"]
mod tls;

#[path = "broker_listeners/check.rs"]
mod check;

#[path = "broker_listeners/client_cert.rs"]
mod client_cert;

use std::net::SocketAddr;
use std::time::Duration;

use edgegate::bus::BrokerConfig;
use edgegate::bus::{Bus, Message as BusMessage};
use support::*;
use tokio::net::TcpStream;
use tokio::time::timeout;

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

/// A client socket with a small receive window, so that a client that does not read soon
/// pushes back on the broker's writes.
async fn small_window_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    timeout(wait(), sock.connect(addr))
        .await
        .expect("TCP connect timed out")
}

/// PUBLISH QoS 0, any size.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut len = 2 + topic.len() + payload.len();
    let mut p = vec![0x30];
    loop {
        let b = (len % 128) as u8;
        len /= 128;
        p.push(if len > 0 { b | 0x80 } else { b });
        if len == 0 {
            break;
        }
    }
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic.as_bytes());
    p.extend(payload);
    p
}

/// Publishes a burst far larger than the socket buffers to `big/x`; returns the bytes a
/// subscriber must receive.
async fn publish_burst(bus: &Bus) -> Vec<u8> {
    let mut want = Vec::new();
    for i in 0..100u8 {
        let payload = vec![i; 60_000];
        want.extend(publish_packet("big/x", &payload));
        bus.publish(BusMessage {
            topic: "big/x".into(),
            payload: payload.into(),
            qos: 0,
            retain: false,
            props: None,
            origin: None,
        })
        .await;
    }
    want
}

/// How much of a burst is still unread when a slow reader pauses.
const PAUSE_BEFORE_END: usize = 1 << 20;

fn burst_config() -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_queued_bytes: 16 << 20,
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    }
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

/// CONNECT, MQTT 3.1.1, keepalive 0, the session kept (clean session 0).
fn connect_keep(id: &str) -> Vec<u8> {
    let mut p = connect(id);
    p[9] = 0;
    p
}

/// Messages sent to a client that stopped reading: together more than the socket buffers
/// between it and the broker hold, so the broker's writes to it block.
const STUCK_COUNT: u8 = 6;
const STUCK_PAYLOAD: usize = 1 << 20;

fn stuck_config() -> BrokerConfig {
    BrokerConfig {
        // Room for a whole message in one WebSocket frame.
        max_packet_size: 4 << 20,
        max_queued_bytes: 64 << 20,
        ..burst_config()
    }
}

/// Publishes the [`STUCK_COUNT`] QoS 1 messages to `stuck/x`.
async fn publish_to_stuck(bus: &Bus) {
    for i in 0..STUCK_COUNT {
        bus.publish(BusMessage {
            topic: "stuck/x".into(),
            payload: vec![i; STUCK_PAYLOAD].into(),
            qos: 1,
            retain: false,
            props: None,
            origin: None,
        })
        .await;
    }
}

/// One packet from a plain TCP stream: first byte and the body after the remaining length.
async fn read_tcp_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let head = s.read_u8().await?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await?;
        std::io::Result::Ok((head, body))
    };
    timeout(wait(), read)
        .await
        .expect("timed out reading a packet")
        .expect("read failed")
}

/// Client id `stuck` is held by a client that stopped reading, with [`publish_to_stuck`]'s
/// messages on their way to it. A new connection (plain TCP) takes the id over without waiting
/// on that client (the router would give up after 5 s and lose what was in flight), and gets
/// every message, in order, the unacknowledged ones again.
async fn take_over_stuck(bus: &Bus) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = TcpStream::connect(bus.local_addr()).await.unwrap();
    let start = tokio::time::Instant::now();
    c.write_all(&connect_keep("stuck")).await.unwrap();
    let mut ack = [0u8; 4];
    timeout(wait(), c.read_exact(&mut ack))
        .await
        .expect("no CONNACK")
        .unwrap();
    assert_eq!(ack, [0x20, 2, 1, 0]);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the takeover waited {:?} for the old connection",
        start.elapsed()
    );
    for i in 0..STUCK_COUNT {
        let (head, body) = read_tcp_packet(&mut c).await;
        assert_eq!(head & !0x08, 0x32, "QoS 1 PUBLISH expected, got {head:02x}");
        assert_eq!(&body[..9], b"\x00\x07stuck/x");
        assert!(
            body.len() == 11 + STUCK_PAYLOAD && body[11..].iter().all(|b| *b == i),
            "message {i} altered or missing"
        );
        c.write_all(&[0x40, 2, body[9], body[10]]).await.unwrap();
    }
}

/// The broker shuts down promptly although a client does not read.
async fn shut_down_past_stuck(bus: &Bus, shutdown: &tokio_util::sync::CancellationToken) {
    shutdown.cancel();
    timeout(Duration::from_secs(3), bus.closed())
        .await
        .expect("shutdown waited on a client that does not read");
}

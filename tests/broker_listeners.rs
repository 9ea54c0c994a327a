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

use edgegate::bus::{Bus, Message as BusMessage};
use edgegate::config::BrokerConfig;
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

//! Helpers for the broker integration tests: a broker on 127.0.0.1:0 and a raw TCP client that
//! writes hand-built MQTT 3.1.1 packets and asserts exact bytes back.

use std::net::SocketAddr;
use std::time::Duration;

use edgegate::bus::BrokerConfig;
use edgegate::bus::Bus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn config(max_connections: usize, max_queued_messages: usize) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections,
        max_packet_size: 64 * 1024,
        max_queued_messages,
        // Tests that want $SYS turn it on.
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    }
}

pub struct Broker {
    pub bus: Bus,
    pub shutdown: CancellationToken,
}

impl Broker {
    pub async fn start() -> Broker {
        Broker::with(config(32, 100)).await
    }

    pub async fn with(cfg: BrokerConfig) -> Broker {
        let shutdown = CancellationToken::new();
        let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
        Broker { bus, shutdown }
    }

    pub fn addr(&self) -> SocketAddr {
        self.bus.local_addr()
    }

    /// A client that sent CONNECT (clean session, keepalive 0) and got CONNACK 0.
    pub async fn client(&self, id: &str) -> Client {
        let mut c = Client::open(self.addr()).await;
        c.send(&connect(id, true, 0)).await;
        c.expect(&[0x20, 2, 0, 0]).await;
        c
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub async fn open(addr: SocketAddr) -> Client {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Client { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Reads exactly `want.len()` bytes and asserts they are `want`.
    pub async fn expect(&mut self, want: &[u8]) {
        let mut got = vec![0u8; want.len()];
        timeout(WAIT, self.stream.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {want:02x?}"))
            .unwrap_or_else(|e| panic!("read failed waiting for {want:02x?}: {e}"));
        assert_eq!(got, want, "got {got:02x?}, want {want:02x?}");
    }

    /// PINGREQ and its PINGRESP: the broker has handled everything this client sent before.
    pub async fn ping(&mut self) {
        self.send(&[0xc0, 0]).await;
        self.expect(&[0xd0, 0]).await;
    }

    /// Asserts the broker closes the connection (EOF or reset) without sending anything more.
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match timeout(WAIT, self.stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("expected close, got {:02x?}", &buf[..n]),
        }
    }

    /// Reads one PUBLISH (any QoS, PUBACK not sent) and returns its topic and payload.
    pub async fn read_publish(&mut self) -> (String, Vec<u8>) {
        let mut head = [0u8; 1];
        self.read_exact(&mut head).await;
        assert_eq!(
            head[0] & 0xf0,
            0x30,
            "expected PUBLISH, got {:02x}",
            head[0]
        );
        let mut len = 0usize;
        for i in 0..4 {
            let mut b = [0u8; 1];
            self.read_exact(&mut b).await;
            len |= usize::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.read_exact(&mut body).await;
        let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
        let skip = 2 + tlen + if head[0] & 0x06 != 0 { 2 } else { 0 };
        (topic, body[skip..].to_vec())
    }

    async fn read_exact(&mut self, buf: &mut [u8]) {
        timeout(WAIT, self.stream.read_exact(buf))
            .await
            .expect("timed out reading")
            .expect("read failed");
    }

    pub async fn subscribe(&mut self, pid: u16, filters: &[(&str, u8)]) {
        self.send(&subscribe(pid, filters)).await;
        let mut suback = vec![0x90, 2 + filters.len() as u8];
        suback.extend_from_slice(&pid.to_be_bytes());
        suback.extend(filters.iter().map(|(_, q)| *q));
        self.expect(&suback).await;
    }
}

/// A UTF-8 string field: 2-byte length, then the bytes.
pub fn field(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// Fixed header with a remaining length (any size) followed by `body`.
pub fn packet(header: u8, body: &[u8]) -> Vec<u8> {
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

pub struct WillSpec<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

pub fn connect(id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    connect_will(id, clean, keep_alive, None)
}

pub fn connect_will(id: &str, clean: bool, keep_alive: u16, will: Option<WillSpec>) -> Vec<u8> {
    let mut flags = if clean { 0x02 } else { 0 };
    let mut body = field(b"MQTT");
    body.push(4);
    if let Some(w) = &will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend(field(id.as_bytes()));
    if let Some(w) = &will {
        body.extend(field(w.topic.as_bytes()));
        body.extend(field(w.payload));
    }
    packet(0x10, &body)
}

/// CONNECT (clean session, keepalive 0) with optional user name and password.
pub fn connect_auth(id: &str, user: Option<&str>, pass: Option<&[u8]>) -> Vec<u8> {
    let mut flags = 0x02;
    if user.is_some() {
        flags |= 0x80;
    }
    if pass.is_some() {
        flags |= 0x40;
    }
    let mut body = field(b"MQTT");
    body.extend([4, flags, 0, 0]);
    body.extend(field(id.as_bytes()));
    if let Some(u) = user {
        body.extend(field(u.as_bytes()));
    }
    if let Some(p) = pass {
        body.extend(field(p));
    }
    packet(0x10, &body)
}

/// Waits (bounded) until the broker's counters satisfy `f`.
pub async fn wait_for_stat(b: &Broker, f: impl Fn(&edgegate::bus::BusStats) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f(&b.bus.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker counters never got there: {:?}",
            b.bus.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn subscribe(pid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for (f, q) in filters {
        body.extend(field(f.as_bytes()));
        body.push(*q);
    }
    packet(0x82, &body)
}

/// PUBLISH with the given flags: QoS, retain, DUP; `pid` is written only for QoS > 0.
pub fn publish(topic: &str, payload: &[u8], qos: u8, pid: u16, retain: bool, dup: bool) -> Vec<u8> {
    let header = 0x30 | (qos << 1) | u8::from(retain) | if dup { 0x08 } else { 0 };
    let mut body = field(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(header, &body)
}

pub fn puback(pid: u16) -> Vec<u8> {
    let mut v = vec![0x40, 2];
    v.extend_from_slice(&pid.to_be_bytes());
    v
}

/// A client connected once the gateway process listens on `addr` (it may still be starting).
pub async fn open_when_listening(addr: SocketAddr) -> Client {
    let bound = if super::gw::emulated() { 60 } else { 10 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(bound);
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            return Client { stream };
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

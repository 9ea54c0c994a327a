//! A raw MQTT-SN client over UDP that sends hand-built datagrams and asserts exact bytes back,
//! and the edgegate binary with an `mqttsn:` section.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::timeout;

use crate::support::{self, Gateway, Subscriber};

/// Upper bound for one expected datagram.
pub fn wait() -> Duration {
    if support::emulated() {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(5)
    }
}

pub fn free_udp_port() -> u16 {
    StdUdp::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("no free UDP port")
}

pub struct Sn {
    pub sock: UdpSocket,
    pub gw: SocketAddr,
}

impl Sn {
    pub async fn open(gw: SocketAddr) -> Sn {
        let bind = if gw.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        Self::open_from(gw, bind).await
    }

    /// A client on another local address (e.g. `127.0.0.2:0`): another source to the gateway.
    pub async fn open_from(gw: SocketAddr, bind: &str) -> Sn {
        let sock = UdpSocket::bind(bind).await.expect("bind client socket");
        Sn { sock, gw }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub async fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.gw).await.expect("send");
    }

    pub async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let (n, _) = timeout(wait(), self.sock.recv_from(&mut buf))
            .await
            .expect("no datagram from the gateway in time")
            .expect("recv");
        buf.truncate(n);
        buf
    }

    pub async fn expect(&self, want: &[u8]) {
        let got = self.recv().await;
        assert_eq!(got, want, "got {got:02x?}, want {want:02x?}");
    }

    /// Asserts that nothing arrives for `d`.
    pub async fn expect_silence(&self, d: Duration) {
        let mut buf = vec![0u8; 70_000];
        if let Ok(Ok((n, _))) = timeout(d, self.sock.recv_from(&mut buf)).await {
            panic!("unexpected datagram {:02x?}", &buf[..n]);
        }
    }

    /// CONNECT (no will) and the CONNACK accepted.
    pub async fn connect(&self, id: &str, clean: bool, keepalive: u16) {
        self.send(&connect(id, false, clean, keepalive)).await;
        self.expect(&[0x03, 0x05, 0x00]).await;
    }

    /// REGISTER `topic` with `msg_id`; returns the topic id from the REGACK (asserted accepted).
    pub async fn register(&self, topic: &str, msg_id: u16) -> u16 {
        let mut p = vec![(6 + topic.len()) as u8, 0x0A, 0, 0];
        p.extend_from_slice(&msg_id.to_be_bytes());
        p.extend_from_slice(topic.as_bytes());
        self.send(&p).await;
        let r = self.recv().await;
        assert_eq!(r.len(), 7, "REGACK expected, got {r:02x?}");
        assert_eq!(&r[..2], &[0x07, 0x0B]);
        assert_eq!(
            &r[4..],
            &[msg_id.to_be_bytes()[0], msg_id.to_be_bytes()[1], 0x00]
        );
        u16::from_be_bytes([r[2], r[3]])
    }
}

/// A PUBLISH the gateway sent, with the topic name it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub topic: String,
    pub flags: u8,
    pub msg_id: u16,
    pub payload: Vec<u8>,
}

impl Sn {
    /// The next PUBLISH to this client: REGISTERs before it are acknowledged and their topic
    /// ids remembered in `names`; a QoS 1 PUBLISH is acknowledged.
    pub async fn next_publish(&self, names: &mut std::collections::HashMap<u16, String>) -> Got {
        loop {
            let r = self.recv().await;
            match r.get(1) {
                Some(0x0A) if r.len() >= 6 => {
                    names.insert(
                        u16::from_be_bytes([r[2], r[3]]),
                        String::from_utf8_lossy(&r[6..]).into_owned(),
                    );
                    self.send(&[0x07, 0x0B, r[2], r[3], r[4], r[5], 0x00]).await;
                }
                Some(0x0C) if r.len() >= 7 => {
                    let id = u16::from_be_bytes([r[3], r[4]]);
                    if r[2] & 0x60 == 0x20 {
                        self.send(&[0x07, 0x0D, r[3], r[4], r[5], r[6], 0x00]).await;
                    }
                    return Got {
                        topic: names.get(&id).cloned().unwrap_or_else(|| format!("#{id}")),
                        flags: r[2],
                        msg_id: u16::from_be_bytes([r[5], r[6]]),
                        payload: r[7..].to_vec(),
                    };
                }
                _ => panic!("expected REGISTER or PUBLISH, got {r:02x?}"),
            }
        }
    }
}

pub fn connect(id: &str, will: bool, clean: bool, keepalive: u16) -> Vec<u8> {
    let flags = if will { 0x08 } else { 0 } | if clean { 0x04 } else { 0 };
    let mut p = vec![(6 + id.len()) as u8, 0x04, flags, 0x01];
    p.extend_from_slice(&keepalive.to_be_bytes());
    p.extend_from_slice(id.as_bytes());
    p
}

/// PUBLISH: `flags` as on the wire, topic id (or short name) bytes, message id, data.
pub fn publish(flags: u8, topic: u16, msg_id: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![(7 + data.len()) as u8, 0x0C, flags];
    p.extend_from_slice(&topic.to_be_bytes());
    p.extend_from_slice(&msg_id.to_be_bytes());
    p.extend_from_slice(data);
    p
}

pub fn subscribe(flags: u8, msg_id: u16, filter: &str) -> Vec<u8> {
    let mut p = vec![(5 + filter.len()) as u8, 0x12, flags];
    p.extend_from_slice(&msg_id.to_be_bytes());
    p.extend_from_slice(filter.as_bytes());
    p
}

/// The gateway binary serving MQTT-SN on a UDP port of its own, with its local broker on TCP.
pub struct Site {
    pub gw: Gateway,
    pub udp: SocketAddr,
    pub broker: u16,
    _dir: tempfile::TempDir,
}

pub fn site_yaml(broker: u16, udp: u16, mqttsn_extra: &str) -> String {
    format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{broker}\nbuffer:\n  dir: data\n  commit_interval: 50ms\nmqttsn:\n  listen: [\"127.0.0.1:{udp}\"]\n  gateway_id: 7\n  stats_interval: 200ms\n{mqttsn_extra}"
    )
}

impl Site {
    /// Starts the gateway; `extra` is more of the `mqttsn:` section (2-space indented lines).
    pub async fn start(extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Site {
        let broker = support::free_port();
        let port = free_udp_port();
        let mut gw = Gateway::new(dir.path(), &site_yaml(broker, port, extra));
        gw.start();
        let udp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let site = Site {
            gw,
            udp,
            broker,
            _dir: dir,
        };
        site.wait_ready().await;
        site
    }

    /// Until SEARCHGW gets a GWINFO.
    pub async fn wait_ready(&self) {
        let c = Sn::open(self.udp).await;
        for _ in 0..200 {
            c.send(&[0x03, 0x01, 0x00]).await;
            let mut buf = [0u8; 16];
            if let Ok(Ok((n, _))) =
                timeout(Duration::from_millis(100), c.sock.recv_from(&mut buf)).await
            {
                assert_eq!(&buf[..n], &[0x03, 0x02, 0x07]);
                return;
            }
        }
        panic!("gateway never answered SEARCHGW\n{}", self.gw.log());
    }

    pub async fn subscriber(&self, filter: &str) -> Subscriber {
        let id = format!("t{}", fastrand::u32(..));
        Subscriber::start(self.broker, &id, filter, false).await
    }

    /// An MQTT client publishing onto the local bus.
    pub async fn bus_client(&self) -> rumqttc::AsyncClient {
        let mut opts =
            rumqttc::MqttOptions::new(format!("p{}", fastrand::u32(..)), "127.0.0.1", self.broker);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        client
    }
}

/// The gateway's committed state rows of namespace `ns` (none while the file is not there yet).
pub fn saved_rows(site: &Site, ns: &str) -> Vec<(String, Vec<u8>)> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let Ok(db) = rusqlite::Connection::open_with_flags(site.gw.db_path(), flags) else {
        return Vec::new();
    };
    let Ok(mut stmt) = db.prepare("SELECT key, value FROM state WHERE ns = ?1") else {
        return Vec::new();
    };
    let rows = stmt.query_map([ns], |r| Ok((r.get(0)?, r.get(1)?)));
    rows.map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The committed MQTT-SN session of client `id`, as JSON.
pub fn saved_session(site: &Site, id: &str) -> Option<serde_json::Value> {
    saved_rows(site, "mqttsn")
        .into_iter()
        .find(|(k, _)| k == id)
        .and_then(|(_, v)| serde_json::from_slice(&v).ok())
}

/// Waits until the committed state satisfies `ok`: what a `kill -9` now would leave behind.
pub async fn wait_committed(site: &Site, what: &str, mut ok: impl FnMut(&Site) -> bool) {
    support::wait_for(what, wait(), || ok(site)).await;
}

/// Waits for a message on `topic` at the subscriber; returns its payload.
pub async fn wait_message(sub: &Subscriber, topic: &str) -> Vec<u8> {
    let mut found = None;
    support::wait_until(wait(), || {
        found = sub
            .snapshot()
            .into_iter()
            .find(|r| r.topic == topic)
            .map(|r| r.payload);
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("nothing on {topic}; got {:?}", sub.snapshot()))
}

pub fn payloads(sub: &Subscriber, topic: &str) -> Vec<String> {
    sub.snapshot()
        .into_iter()
        .filter(|r| r.topic == topic)
        .map(|r| r.text())
        .collect()
}

/// Waits until the gateway's stats (JSON, published when they change) satisfy `ok`.
pub async fn wait_stats(
    site: &Site,
    mut ok: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let sub = site.subscriber("farm/gw1/mqttsn/stats").await;
    let deadline = std::time::Instant::now() + wait();
    let mut last = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        if let Some(r) = sub.snapshot().last() {
            last = r.json();
            if ok(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stats never got there; last: {last}");
}

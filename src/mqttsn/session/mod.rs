//! The gateway's protocol state, without I/O: datagrams, bus deliveries and clock ticks in,
//! [`Action`]s out. One [`Client`] per client id, found by the peer it sends from.
//!
//! Client states follow the spec's figure 4: active (after CONNACK), asleep (DISCONNECT with a
//! duration), awake (PINGREQ with its client id: buffered messages go out, then PINGRESP),
//! disconnected, and lost (keepalive or sleep supervision at 1.5x expired, or retransmissions
//! used up: the will is published).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::codec::{Frame, Packet, Qos, ReturnCode, WillTopic};
use super::lifetime::{stale, Sources};
use super::qos::{Inbound, Outbound};
use super::topics::{Predefined, Table};

/// Where a client is: a UDP address, and behind a forwarder the wireless node id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub node: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `ctrl`: the encapsulation's ctrl byte when `peer` is behind a forwarder.
    Send(Peer, u8, Packet),
    Publish {
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
    },
    Subscribe {
        client: String,
        filter: String,
    },
    Unsubscribe {
        client: String,
        filter: String,
    },
    /// The client's durable state changed: write it.
    Save(String),
    Forget(String),
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub gateway_id: u8,
    pub max_clients: usize,
    pub max_clients_per_source: usize,
    pub session_expiry: Duration,
    pub max_rate: u32,
    pub max_buffered: usize,
    pub max_topics: usize,
    pub t_retry: Duration,
    pub n_retry: u32,
}

/// Counters since start, published with the gateway's MQTT-SN stats.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counters {
    pub publishes_in: u64,
    pub publishes_out: u64,
    pub rate_limited: u64,
    pub buffer_dropped: u64,
    pub invalid_topic: u64,
    pub not_connected: u64,
    pub wills_published: u64,
    pub clients_lost: u64,
    /// CONNECTs refused: `max_clients`, or the source's `max_clients_per_source`, reached.
    pub clients_refused: u64,
    /// Sessions removed after `session_expiry` without their client.
    pub sessions_expired: u64,
    /// Messages those sessions held for their clients.
    pub expired_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    WillTopic,
    WillMsg,
    Active,
    Asleep { until: Instant },
    Awake,
    Disconnected,
    Lost,
}

pub struct Client {
    pub id: String,
    pub peer: Peer,
    pub ctrl: u8,
    pub state: State,
    pub clean: bool,
    pub keepalive: u16,
    pub sleep: u16,
    pub last_seen: Instant,
    pub will: Option<WillTopic>,
    pub will_msg: Bytes,
    pub topics: Table,
    pub subs: BTreeMap<String, Qos>,
    pub out: Outbound,
    pub inbound: Inbound,
    bucket: Bucket,
}

/// Token bucket: `rate` messages per second, bursts of `rate`.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    pub fn new(now: Instant) -> Bucket {
        Bucket {
            tokens: f64::MAX,
            refilled: now,
        }
    }

    pub fn allow(&mut self, rate: u32, now: Instant) -> bool {
        let rate = rate as f64;
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens.min(rate) + dt * rate).min(rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sources of connectionless (QoS -1) publishes tracked for their rate; beyond this the table
/// starts over.
const MAX_ANON_SOURCES: usize = 4096;

impl Client {
    pub fn new(id: &str, peer: Peer, now: Instant) -> Client {
        Client {
            id: id.to_owned(),
            peer,
            ctrl: 0,
            state: State::Disconnected,
            clean: true,
            keepalive: 0,
            sleep: 0,
            last_seen: now,
            will: None,
            will_msg: Bytes::new(),
            topics: Table::default(),
            subs: BTreeMap::new(),
            out: Outbound::default(),
            inbound: Inbound::default(),
            bucket: Bucket::new(now),
        }
    }

    pub(super) fn allow(&mut self, rate: u32, now: Instant) -> bool {
        self.bucket.allow(rate, now)
    }

    pub fn send(&self, out: &mut Vec<Action>, p: Packet) {
        out.push(Action::Send(self.peer.clone(), self.ctrl, p));
    }

    pub(super) fn connected(&self) -> bool {
        matches!(self.state, State::Active | State::Awake)
    }
}

/// 1.5 times a keepalive or sleep duration, the spec's supervision margin.
pub fn grace(secs: u16) -> Duration {
    Duration::from_millis(secs as u64 * 1500)
}

pub struct Engine {
    pub limits: Limits,
    pub predefined: Predefined,
    pub clients: HashMap<String, Client>,
    pub by_peer: HashMap<Peer, String>,
    pub counters: Counters,
    pub sources: Sources,
    /// Rate of QoS -1 publishes per source address, held to the per-client `max_rate` too.
    anon: HashMap<SocketAddr, Bucket>,
}

impl Engine {
    pub fn new(limits: Limits, predefined: Predefined) -> Engine {
        Engine {
            limits,
            predefined,
            clients: HashMap::new(),
            by_peer: HashMap::new(),
            counters: Counters::default(),
            sources: Sources::default(),
            anon: HashMap::new(),
        }
    }

    pub fn handle(&mut self, addr: SocketAddr, frame: Frame, now: Instant, out: &mut Vec<Action>) {
        let (ctrl, node) = match frame.forwarded {
            Some((c, n)) => (c, Some(n)),
            None => (0, None),
        };
        let peer = Peer { addr, node };
        match frame.packet {
            Packet::SearchGw { .. } => out.push(Action::Send(
                peer,
                ctrl,
                Packet::GwInfo {
                    gw_id: self.limits.gateway_id,
                    gw_add: Bytes::new(),
                },
            )),
            Packet::Connect {
                will,
                clean_session,
                duration,
                client_id,
            } => self.connect(
                peer,
                ctrl,
                will,
                clean_session,
                duration,
                &client_id,
                now,
                out,
            ),
            Packet::PingReq(Some(id)) => self.wake(peer, ctrl, &id, now, out),
            Packet::Publish(p) if p.qos == Qos::MinusOne && !self.by_peer.contains_key(&peer) => {
                if self.anon.len() >= MAX_ANON_SOURCES && !self.anon.contains_key(&addr) {
                    self.anon.clear();
                }
                let rate = self.limits.max_rate;
                let bucket = self.anon.entry(addr).or_insert_with(|| Bucket::new(now));
                if bucket.allow(rate, now) {
                    self.publish_in(None, p, now, out)
                } else {
                    self.counters.rate_limited += 1;
                }
            }
            packet => {
                let Some(id) = self.by_peer.get(&peer).cloned() else {
                    self.counters.not_connected += 1;
                    return;
                };
                if let Some(c) = self.clients.get_mut(&id) {
                    c.last_seen = now;
                    c.ctrl = ctrl;
                }
                self.on_packet(&id, packet, now, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn connect(
        &mut self,
        peer: Peer,
        ctrl: u8,
        will: bool,
        clean: bool,
        duration: u16,
        id: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !self.admits(id, peer.addr.ip()) {
            self.counters.clients_refused += 1;
            out.push(Action::Send(
                peer,
                ctrl,
                Packet::ConnAck(ReturnCode::Congestion),
            ));
            return;
        }
        // Another client id on this peer: that client is gone from here (a clean session for
        // good: nothing would ever end it otherwise).
        if let Some(old) = self.by_peer.get(&peer).cloned() {
            if old != id {
                self.by_peer.remove(&peer);
                let clean = self.clients.get_mut(&old).map(|c| {
                    c.state = State::Disconnected;
                    c.clean
                });
                match clean {
                    Some(true) => self.forget(&old, out),
                    Some(false) => out.push(Action::Save(old)),
                    None => {}
                }
            }
        }
        let c = self.clients.entry(id.to_owned()).or_insert_with(|| {
            self.sources.add(peer.addr.ip());
            Client::new(id, peer.clone(), now)
        });
        if c.peer != peer {
            if self.by_peer.get(&c.peer).map(String::as_str) == Some(id) {
                self.by_peer.remove(&c.peer);
            }
            self.sources.moved(c.peer.addr.ip(), peer.addr.ip());
            c.peer = peer.clone();
        }
        self.by_peer.insert(peer, id.to_owned());
        if clean {
            for filter in std::mem::take(&mut c.subs).into_keys() {
                out.push(Action::Unsubscribe {
                    client: id.to_owned(),
                    filter,
                });
            }
            c.topics.clear();
            c.out.clear();
            c.inbound = Inbound::default();
            c.will = None;
            c.will_msg = Bytes::new();
        }
        c.clean = clean;
        c.keepalive = duration;
        c.last_seen = now;
        c.ctrl = ctrl;
        if will {
            c.state = State::WillTopic;
            c.send(out, Packet::WillTopicReq);
        } else {
            c.state = State::Active;
            c.send(out, Packet::ConnAck(ReturnCode::Accepted));
            self.resume(id, now, out);
        }
        out.push(Action::Save(id.to_owned()));
    }

    fn wake(&mut self, peer: Peer, ctrl: u8, id: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(c) = self.clients.get_mut(id) else {
            self.counters.not_connected += 1;
            return;
        };
        match c.state {
            State::Asleep { .. } | State::Awake => {
                let was_asleep = c.state != State::Awake;
                if c.peer != peer {
                    self.by_peer.remove(&c.peer);
                    self.sources.moved(c.peer.addr.ip(), peer.addr.ip());
                    c.peer = peer.clone();
                    self.by_peer.insert(peer, id.to_owned());
                }
                c.ctrl = ctrl;
                c.last_seen = now;
                c.state = State::Awake;
                if was_asleep {
                    self.resume(id, now, out);
                } else {
                    self.pump(id, now, out);
                }
            }
            State::Active if c.peer == peer => {
                c.last_seen = now;
                c.send(out, Packet::PingResp);
            }
            _ => self.counters.not_connected += 1,
        }
    }

    fn on_packet(&mut self, id: &str, packet: Packet, now: Instant, out: &mut Vec<Action>) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        match (c.state, packet) {
            (State::WillTopic, Packet::WillTopic(w)) => {
                let has_will = w.is_some();
                c.will = w;
                if has_will {
                    c.state = State::WillMsg;
                    c.send(out, Packet::WillMsgReq);
                } else {
                    c.will_msg = Bytes::new();
                    self.accept(id, now, out);
                }
            }
            (State::WillMsg, Packet::WillMsg(m)) => {
                c.will_msg = m;
                self.accept(id, now, out);
            }
            (State::Active | State::Awake, Packet::Publish(p)) => {
                self.publish_in(Some(id), p, now, out)
            }
            (State::Active | State::Awake, Packet::PingReq(None)) => {
                c.send(out, Packet::PingResp);
            }
            (State::Asleep { .. }, Packet::PingReq(None)) => {
                c.state = State::Awake;
                self.resume(id, now, out);
            }
            (State::Active | State::Awake, Packet::Disconnect(Some(d))) if d > 0 => {
                c.sleep = d;
                c.state = State::Asleep {
                    until: now + grace(d),
                };
                c.send(out, Packet::Disconnect(None));
                out.push(Action::Save(id.to_owned()));
            }
            // A sleep of 0 s is no sleep.
            (_, Packet::Disconnect(_)) => {
                c.send(out, Packet::Disconnect(None));
                c.state = State::Disconnected;
                if c.clean {
                    self.forget(id, out);
                } else {
                    out.push(Action::Save(id.to_owned()));
                }
            }
            (State::Active | State::Awake, packet) => self.on_active(id, packet, now, out),
            _ => self.counters.not_connected += 1,
        }
    }

    fn accept(&mut self, id: &str, now: Instant, out: &mut Vec<Action>) {
        if let Some(c) = self.clients.get_mut(id) {
            c.state = State::Active;
            c.send(out, Packet::ConnAck(ReturnCode::Accepted));
            out.push(Action::Save(id.to_owned()));
        }
        self.resume(id, now, out);
    }

    /// A client back (connected, or awake): what was in flight goes again first, then the queue.
    fn resume(&mut self, id: &str, now: Instant, out: &mut Vec<Action>) {
        if let Some(c) = self.clients.get_mut(id) {
            if let Some(p) = c.out.resume(now) {
                c.send(out, p);
            }
        }
        self.pump(id, now, out);
    }

    /// Removes a client's session and everything it had.
    pub(super) fn forget(&mut self, id: &str, out: &mut Vec<Action>) {
        if let Some(c) = self.clients.remove(id) {
            if self.by_peer.get(&c.peer).map(String::as_str) == Some(id) {
                self.by_peer.remove(&c.peer);
            }
            self.sources.remove(c.peer.addr.ip());
            for filter in c.subs.into_keys() {
                out.push(Action::Unsubscribe {
                    client: id.to_owned(),
                    filter,
                });
            }
            out.push(Action::Forget(id.to_owned()));
        }
    }

    /// Supervision and retransmission; call a few times per second.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let (t, n) = (self.limits.t_retry, self.limits.n_retry);
        let mut lost = Vec::new();
        let mut gone = Vec::new();
        for (id, c) in self.clients.iter_mut() {
            if stale(c, self.limits.session_expiry, now) {
                gone.push(id.clone());
                continue;
            }
            let expired = match c.state {
                State::Active | State::WillTopic | State::WillMsg | State::Awake => {
                    c.keepalive > 0 && now.duration_since(c.last_seen) > grace(c.keepalive)
                }
                State::Asleep { until } => now > until,
                State::Disconnected | State::Lost => false,
            };
            if expired {
                lost.push(id.clone());
                continue;
            }
            if c.connected() {
                match c.out.retry(now, t, n) {
                    super::qos::Retry::Nothing => {}
                    super::qos::Retry::Resend(p) => c.send(out, p),
                    super::qos::Retry::GiveUp => lost.push(id.clone()),
                }
            }
        }
        match lost.as_slice() {
            [] => {}
            [one] => tracing::info!(client = %one, "MQTT-SN client lost (silent past 1.5x keepalive or sleep, or unacknowledged); its will is published if it has one"),
            many => tracing::info!("{} MQTT-SN clients lost (silent past 1.5x keepalive or sleep, or unacknowledged); their wills are published", many.len()),
        }
        for id in lost {
            self.lose(&id, out);
        }
        if !gone.is_empty() {
            tracing::info!(
                "{} MQTT-SN sessions expired (no message from their clients for mqttsn.session_expiry); removed",
                gone.len()
            );
        }
        for id in gone {
            self.expire(&id, out);
        }
    }

    /// The client is gone without a DISCONNECT: its will is published.
    pub(super) fn lose(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        self.counters.clients_lost += 1;
        if let Some(w) = c.will.take() {
            self.counters.wills_published += 1;
            out.push(Action::Publish {
                topic: w.topic,
                payload: std::mem::take(&mut c.will_msg),
                qos: w.qos.mqtt(),
                retain: w.retain,
            });
        }
        // A persistent session keeps its in-flight exchange: resumed first when it is back.
        c.state = State::Lost;
        if c.clean {
            self.forget(id, out);
        } else {
            out.push(Action::Save(id.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests;

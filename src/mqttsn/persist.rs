//! Client sessions in the store's state table (namespace `mqttsn`, key = client id): address,
//! state, keepalive, will, topic ids and subscriptions, so that a restarted gateway serves a
//! client that never noticed. Messages buffered for a client that is away (asleep, disconnected
//! or lost with a persistent session) are kept too; those queued for a connected client are in
//! flight for moments only and are not.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::codec::{Qos, WillTopic};
use super::qos::Queued;
use super::session::{grace, Client, Engine, Peer, State};
use super::topics::Table;

pub const NAMESPACE: &str = "mqttsn";

#[derive(Serialize, Deserialize)]
struct Saved {
    addr: SocketAddr,
    node: Option<Vec<u8>>,
    ctrl: u8,
    /// active, asleep or disconnected.
    state: String,
    clean: bool,
    keepalive: u16,
    sleep: u16,
    /// (qos, retain, topic).
    will: Option<(u8, bool, String)>,
    will_msg: Vec<u8>,
    topics: Table,
    /// (filter, qos).
    subs: Vec<(String, u8)>,
    /// (topic, payload, qos, retain) buffered while the client is away.
    #[serde(default)]
    queue: Vec<(String, Vec<u8>, u8, bool)>,
}

impl Engine {
    /// The durable form of client `id`, `None` if there is no such client.
    pub fn snapshot(&self, id: &str) -> Option<Vec<u8>> {
        let c = self.clients.get(id)?;
        let state = match c.state {
            State::Active | State::WillTopic | State::WillMsg => "active",
            State::Asleep { .. } | State::Awake => "asleep",
            State::Disconnected | State::Lost => "disconnected",
        };
        let s = Saved {
            addr: c.peer.addr,
            node: c.peer.node.as_ref().map(|n| n.to_vec()),
            ctrl: c.ctrl,
            state: state.to_owned(),
            clean: c.clean,
            keepalive: c.keepalive,
            sleep: c.sleep,
            will: c
                .will
                .as_ref()
                .map(|w| (w.qos.mqtt(), w.retain, w.topic.clone())),
            will_msg: c.will_msg.to_vec(),
            topics: c.topics.clone(),
            subs: c.subs.iter().map(|(f, q)| (f.clone(), q.mqtt())).collect(),
            queue: match c.connected() {
                true => Vec::new(),
                false => c
                    .out
                    .queue
                    .iter()
                    .map(|m| (m.topic.clone(), m.payload.to_vec(), m.qos.mqtt(), m.retain))
                    .collect(),
            },
        };
        serde_json::to_vec(&s).ok()
    }

    /// Brings back a saved client; its supervision clocks start now. Returns its filters, for
    /// the bus subscriptions.
    pub fn restore(&mut self, id: &str, bytes: &[u8], now: Instant) -> Result<Vec<String>, String> {
        let s: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let peer = Peer {
            addr: s.addr,
            node: s.node.map(Bytes::from),
        };
        let mut c = Client::new(id, peer.clone(), now);
        c.ctrl = s.ctrl;
        c.clean = s.clean;
        c.keepalive = s.keepalive;
        c.sleep = s.sleep;
        c.state = match s.state.as_str() {
            "active" => State::Active,
            "asleep" => State::Asleep {
                until: now + grace(s.sleep),
            },
            _ => State::Disconnected,
        };
        c.will = s.will.map(|(qos, retain, topic)| WillTopic {
            qos: Qos::from_mqtt(qos),
            retain,
            topic,
        });
        c.will_msg = Bytes::from(s.will_msg);
        c.topics = s.topics;
        c.topics.reindex();
        c.subs = s
            .subs
            .into_iter()
            .map(|(f, q)| (f, Qos::from_mqtt(q)))
            .collect();
        c.out.queue = s
            .queue
            .into_iter()
            .map(|(topic, payload, qos, retain)| Queued {
                topic,
                payload: Bytes::from(payload),
                qos: Qos::from_mqtt(qos),
                retain,
            })
            .collect();
        let filters = c.subs.keys().cloned().collect();
        if c.state != State::Disconnected {
            self.by_peer.insert(peer, id.to_owned());
        }
        self.clients.insert(id.to_owned(), c);
        Ok(filters)
    }
}

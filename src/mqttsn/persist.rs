//! Client sessions in the store's state table (namespace `mqttsn`, key = client id): address,
//! state, keepalive, will, topic ids and subscriptions, so that a restarted gateway serves a
//! client that never noticed. Messages buffered for a client that is away (asleep, disconnected
//! or lost with a persistent session) are kept too; those queued for a connected client are in
//! flight for moments only and are not. The in-flight exchange of a client that is away is kept
//! as well, to be resumed first when it is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::codec::{Packet, Publish, Qos, TopicRef, WillTopic};
use super::lifetime::held;
use super::qos::{Inflight, Queued, Wait};
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
    /// Wall-clock time of the client's last message (ms since the epoch): a restored session
    /// that is away expires counting from it.
    #[serde(default)]
    last_seen: Option<u64>,
    /// The exchange in flight while the client is away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inflight: Option<SavedInflight>,
}

/// An in-flight PUBLISH waiting for PUBACK or PUBREC, or a PUBREL waiting for PUBCOMP. A
/// REGISTER is not kept: the message that needs it is still queued and registers again.
#[derive(Serialize, Deserialize)]
enum SavedInflight {
    Publish {
        qos: u8,
        retain: bool,
        /// "id", "predefined" or "short", and the id (a short name's two bytes).
        topic: (String, u16),
        msg_id: u16,
        data: Vec<u8>,
    },
    PubRel(u16),
}

impl SavedInflight {
    fn of(f: &Inflight) -> Option<SavedInflight> {
        match &f.wait {
            Wait::PubAck(p) | Wait::PubRec(p) => {
                let topic = match p.topic {
                    TopicRef::Id(i) => ("id", i),
                    TopicRef::Predefined(i) => ("predefined", i),
                    TopicRef::Short(s) => ("short", u16::from_be_bytes(s)),
                };
                Some(SavedInflight::Publish {
                    qos: p.qos.mqtt(),
                    retain: p.retain,
                    topic: (topic.0.to_owned(), topic.1),
                    msg_id: p.msg_id,
                    data: p.data.to_vec(),
                })
            }
            Wait::PubComp(m) => Some(SavedInflight::PubRel(*m)),
            Wait::RegAck { .. } => None,
        }
    }

    fn restore(self, now: Instant) -> Result<Inflight, String> {
        let (wait, packet) = match self {
            SavedInflight::Publish {
                qos,
                retain,
                topic: (kind, t),
                msg_id,
                data,
            } => {
                let topic = match kind.as_str() {
                    "id" => TopicRef::Id(t),
                    "predefined" => TopicRef::Predefined(t),
                    "short" => TopicRef::Short(t.to_be_bytes()),
                    other => return Err(format!("in-flight topic kind `{other}`")),
                };
                let qos = Qos::from_mqtt(qos);
                let p = Publish {
                    dup: true,
                    qos,
                    retain,
                    topic,
                    msg_id,
                    data: Bytes::from(data),
                };
                let wait = match qos {
                    Qos::Two => Wait::PubRec(p.clone()),
                    _ => Wait::PubAck(p.clone()),
                };
                (wait, Packet::Publish(p))
            }
            SavedInflight::PubRel(m) => (Wait::PubComp(m), Packet::PubRel(m)),
        };
        Ok(Inflight {
            wait,
            packet,
            sent: now,
            retries: 0,
        })
    }
}

impl Engine {
    /// The durable form of client `id`, `None` if there is no such client. `wall` is the
    /// wall-clock time at `now`.
    pub fn snapshot(&self, id: &str, now: Instant, wall: SystemTime) -> Option<Vec<u8>> {
        let c = self.clients.get(id)?;
        let last_seen = wall
            .checked_sub(now.saturating_duration_since(c.last_seen))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
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
            last_seen,
            inflight: match c.connected() {
                true => None,
                false => c.out.inflight.as_ref().and_then(SavedInflight::of),
            },
        };
        serde_json::to_vec(&s).ok()
    }

    /// Brings back a saved client; its supervision clocks start now, but the expiry of a
    /// session whose client is away counts from its last message. Returns its filters, for the
    /// bus subscriptions; `None` when the session expired while the gateway was stopped (it is
    /// counted, and to be deleted). `wall` is the wall-clock time at `now`.
    pub fn restore(
        &mut self,
        id: &str,
        bytes: &[u8],
        now: Instant,
        wall: SystemTime,
    ) -> Result<Option<Vec<String>>, String> {
        let s: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        // Unknown (an older row) or in the future: as if just now.
        let away_for = s
            .last_seen
            .and_then(|ms| {
                wall.duration_since(UNIX_EPOCH + Duration::from_millis(ms))
                    .ok()
            })
            .unwrap_or_default();
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
        if c.state == State::Disconnected {
            // Shortly after boot the monotonic clock cannot go back that far: the expiry then
            // counts from now, later than due but still bounded.
            c.last_seen = now.checked_sub(away_for).unwrap_or(now);
        }
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
        if let Some(f) = s.inflight {
            let f = f.restore(now)?;
            c.out.ids_after(f.wait.msg_id());
            c.out.inflight = Some(f);
        }
        let expiry = self.limits.session_expiry;
        if c.state == State::Disconnected && away_for > expiry {
            self.counters.sessions_expired += 1;
            self.counters.expired_dropped += held(&c);
            return Ok(None);
        }
        let filters = c.subs.keys().cloned().collect();
        if c.state != State::Disconnected {
            self.by_peer.insert(peer.clone(), id.to_owned());
        }
        self.sources.add(peer.addr.ip());
        self.clients.insert(id.to_owned(), c);
        Ok(Some(filters))
    }
}

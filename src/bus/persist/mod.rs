//! Persistent sessions and the retained store across restarts, in the store's state table (the
//! gateway's one database owner; the bus never opens a connection of its own).
//!
//! Namespaces: `bus.retained` (key: topic), `bus.session` (key: client id; subscriptions, next
//! packet id, expiry interval, when its connection ended), `bus.queue` (key: 16 hex digits of a sequence number, `/`, client id; one message
//! each, queued or sent-and-unacknowledged), `bus.qos2in` (key: 4 hex digits of a packet id, `/`,
//! client id: a QoS 2 message received and not released yet), `bus.will` (key: client id: a will
//! waiting for its delay after its connection ended). Records: `records.rs`.
//!
//! Written through, riding the store's batched commits (the outbox's power-cut window): retained
//! set/delete (the copies of the gateway's own readings are coalesced instead:
//! `persist::coalesce`); a persistent session's creation, subscribe and unsubscribe; each QoS 1/2
//! message queued while its persistent session is offline, rewritten when sent (so a crash before the
//! acknowledgement resends it with DUP) and deleted when acknowledged; an incoming QoS 2 packet
//! id from its PUBREC to PUBREL (so a resend after a crash is not delivered twice; never before
//! its message is written, never for a refused one); at detach, the
//! session's in-flight messages and whatever it still has queued. Clean sessions are never written;
//! messages queued for a connected session are written only when it detaches.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::client_queue::ClientQueue;
use super::codec::{AckKind, Packet};
use super::expiry::DelayedWill;
use super::sent_keys::{PidMap, Sent};
use super::session::{Pending, SessionState};
use super::subscription::Sub;
use super::Message;
use crate::store::StateWriter;
use records::{self as rec, SessionRecord, Stage};

pub(crate) const NS_RETAINED: &str = "bus.retained";
pub(crate) const NS_SESSION: &str = "bus.session";
pub(crate) const NS_QUEUE: &str = "bus.queue";
pub(crate) const NS_QOS2_IN: &str = "bus.qos2in";
pub(crate) const NS_WILL: &str = "bus.will";

/// `{seq:016x}/{client}`, without the formatting machinery: this is on every queued message.
fn queue_key(client: &str, seq: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(17 + client.len());
    for shift in (0..16).rev() {
        key.push(char::from(HEX[(seq >> (shift * 4)) as usize & 15]));
    }
    key.push('/');
    key.push_str(client);
    key
}

fn qos2_key(client: &str, pid: u16) -> String {
    format!("{pid:04x}/{client}")
}

fn parse_qos2_key(key: &str) -> Option<(u16, &str)> {
    let (pid, client) = key.split_at_checked(4)?;
    let client = client.strip_prefix('/')?;
    Some((u16::from_str_radix(pid, 16).ok()?, client))
}

fn parse_queue_key(key: &str) -> Option<(u64, &str)> {
    let (seq, client) = key.split_at_checked(16)?;
    let client = client.strip_prefix('/')?;
    Some((u64::from_str_radix(seq, 16).ok()?, client))
}

/// The bus's writer into the store. Its methods never block: they record a change for the
/// store's next commit.
pub(crate) struct Persist {
    store: StateWriter,
    next_seq: AtomicU64,
    /// The gateway's own retained copies waiting for their flush (`persist::coalesce`).
    own: coalesce::Coalesced,
}

impl Persist {
    fn seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn put_queued(&self, client: &str, seq: u64, value: Vec<u8>) {
        self.store.put(NS_QUEUE, queue_key(client, seq), value);
    }

    /// The first write of a fresh key.
    fn add_queued(&self, client: &str, seq: u64, value: Vec<u8>) {
        self.store.put_new(NS_QUEUE, queue_key(client, seq), value);
    }

    fn delete_queued(&self, client: &str, seq: u64) {
        self.store.delete(NS_QUEUE, queue_key(client, seq));
    }

    /// Queues a QoS 1/2 `msg` for the offline persistent session `client`, durably; returns
    /// how many messages were dropped (see [`ClientQueue::push`]).
    pub fn queue(&self, client: &str, queue: &ClientQueue, msg: Message) -> u64 {
        let seq = self.seq();
        let value = rec::encode_message(&msg, Stage::Queued);
        let pushed = queue.push_keyed(msg, Some(seq), |old| self.delete_queued(client, old));
        if pushed.keyed {
            self.add_queued(client, seq, value);
        }
        pushed.dropped
    }

    /// Writes the session record of persistent session `client`, whose expiry interval is
    /// `expiry` seconds; an offline one is stamped with the time now, its connection's end.
    pub fn session(
        &self,
        client: &str,
        subs: &[(String, Sub)],
        state: &SessionState,
        expiry: u32,
        online: bool,
    ) {
        let record = SessionRecord {
            expiry,
            disconnected_at: if online { 0 } else { rec::unix_now() },
            next_pid: state.next_pid,
            subs: subs
                .iter()
                .map(|(f, s)| (f.clone(), s.options_byte(), s.id))
                .collect(),
        };
        self.store
            .put(NS_SESSION, client.to_owned(), rec::encode_session(&record));
    }

    /// Persistent session `client` (expiry interval `expiry` seconds) lost its connection,
    /// leaving `state`: its record, its in-flight messages and everything still queued are written.
    pub fn detached(
        &self,
        client: &str,
        subs: &[(String, Sub)],
        state: &SessionState,
        expiry: u32,
        out: &ClientQueue,
    ) {
        let mut sent = out.sent.lock();
        let mut kept = PidMap(Vec::with_capacity(state.inflight.len()));
        for (pid, pending) in &state.inflight {
            // A message sent from the store has an up-to-date record already.
            if let Some(s) = sent.remove(pid) {
                kept.insert(*pid, s);
                continue;
            }
            let key = self.seq();
            let (value, s) = match pending {
                Pending::Publish(m) => {
                    let s = Sent {
                        key,
                        qos: m.qos,
                        released: false,
                    };
                    (rec::encode_message(m, Stage::Sent(*pid)), s)
                }
                Pending::Released => {
                    let s = Sent {
                        key,
                        qos: 2,
                        released: true,
                    };
                    (rec::encode_message(&released(), Stage::Released(*pid)), s)
                }
            };
            self.add_queued(client, key, value);
            kept.insert(*pid, s);
        }
        for gone in sent.values() {
            self.delete_queued(client, gone.key);
        }
        *sent = kept;
        drop(sent);
        out.key_rest(|m| {
            let key = self.seq();
            self.add_queued(client, key, rec::encode_message(m, Stage::Queued));
            key
        });
        self.session(client, subs, state, expiry, false);
    }

    /// The will of offline session `client` waits for its delay.
    pub fn will_waiting(&self, client: &str, will: &DelayedWill) {
        let value = rec::encode_will(will.delay, &will.msg);
        self.store.put(NS_WILL, client.to_owned(), value);
    }

    /// The waiting will of session `client` was published, or its client came back.
    pub fn will_done(&self, client: &str) {
        self.store.delete(NS_WILL, client.to_owned());
    }

    /// Persistent session `client` ends (a clean session took its id): all of it goes.
    pub fn discard(&self, client: &str, out: &ClientQueue, incoming_qos2: &[u16]) {
        self.store.delete(NS_SESSION, client.to_owned());
        self.will_done(client);
        for pid in incoming_qos2 {
            self.store.delete(NS_QOS2_IN, qos2_key(client, *pid));
        }
        for key in out.take_keys() {
            self.delete_queued(client, key);
        }
        for s in std::mem::take(&mut *out.sent.lock()).into_values() {
            self.delete_queued(client, s.key);
        }
    }

    /// A stored message was not sent and never will be (expired, or too large for the client).
    pub fn unsent(&self, client: &str, key: u64) {
        self.delete_queued(client, key);
    }

    /// `packet` (a PUBLISH) carried `msg`, stored under `key`: record its packet id, so that it
    /// is resent with DUP after a restart until acknowledged.
    pub fn sent(&self, client: &str, out: &ClientQueue, key: u64, msg: &Message, packet: &Packet) {
        let Packet::Publish(p) = packet else { return };
        if p.qos == 0 {
            self.delete_queued(client, key);
            return;
        }
        let stage = Stage::Sent(p.pid);
        let props = msg.props.as_deref();
        // From the message, not the packet: an MQTT 5 topic alias may stand for its topic there.
        let value = rec::encode_parts(&msg.topic, &msg.payload, p.qos, p.retain, props, stage);
        self.put_queued(client, key, value);
        let s = Sent {
            key,
            qos: p.qos,
            released: false,
        };
        out.sent.lock().insert(p.pid, s);
    }

    /// A packet from `client` (whose queue is `queue`), before its session handles it: settles
    /// acknowledgements (see [`Persist::acked`]); a PUBREL of a `persistent` session ends the
    /// stored packet id of an incoming QoS 2 message.
    pub fn received(&self, client: &str, queue: &ClientQueue, persistent: bool, packet: &Packet) {
        self.acked(client, queue, packet);
        match packet {
            Packet::Pubrel(pid)
            | Packet::Ack {
                kind: AckKind::Pubrel,
                pid,
                ..
            } if persistent => self.store.delete(NS_QOS2_IN, qos2_key(client, *pid)),
            _ => {}
        }
    }

    /// The success PUBREC for incoming QoS 2 packet id `pid` of persistent session `client` goes
    /// out: the id is stored until the PUBREL, so that a resend after a restart is not delivered
    /// twice. Not earlier: the PUBREC follows the routing of its message, and for a forwarded
    /// one the outbox's commit, so the id never reaches the disk before the message does.
    pub fn qos2_acknowledged(&self, client: &str, pid: u16) {
        // Not `put_new`: the same id may have been stored and released before.
        self.store
            .put(NS_QOS2_IN, qos2_key(client, pid), vec![rec::VERSION]);
    }

    /// An acknowledgement from the client: PUBACK and PUBCOMP end a stored message, PUBREC
    /// moves it on to awaiting PUBCOMP (or, with an MQTT 5 failure code, ends it). Others (and
    /// unknown ids) are ignored, as the session does.
    pub fn acked(&self, client: &str, out: &ClientQueue, packet: &Packet) {
        let (kind, pid, failed) = match packet {
            Packet::Puback(pid) => (AckKind::Puback, *pid, false),
            Packet::Pubrec(pid) => (AckKind::Pubrec, *pid, false),
            Packet::Pubcomp(pid) => (AckKind::Pubcomp, *pid, false),
            Packet::Ack {
                kind, pid, reason, ..
            } => (*kind, *pid, *reason >= 0x80),
            _ => return,
        };
        let (wanted_qos, was_released) = match kind {
            AckKind::Puback => (1, false),
            AckKind::Pubrec => (2, false),
            AckKind::Pubcomp => (2, true),
            AckKind::Pubrel => return,
        };
        let mut sent = out.sent.lock();
        let Some(s) = sent.get_mut(&pid) else { return };
        if s.qos != wanted_qos || s.released != was_released {
            return;
        }
        if kind == AckKind::Pubrec && !failed {
            s.released = true;
            let value = rec::encode_message(&released(), Stage::Released(pid));
            let key = s.key;
            drop(sent);
            self.put_queued(client, key, value);
        } else {
            let key = s.key;
            sent.remove(&pid);
            drop(sent);
            self.delete_queued(client, key);
        }
    }
}

/// The body of a released-QoS 2 record: only its packet id matters.
fn released() -> Message {
    Message {
        topic: String::new(),
        payload: Bytes::new(),
        qos: 2,
        retain: false,
        props: None,
        origin: None,
    }
}

mod coalesce;
mod records;

mod restore;
pub(crate) use restore::{load, Restored};

#[cfg(test)]
mod tests;

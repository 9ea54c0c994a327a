//! Persistent sessions and the retained store across restarts, in the store's state table (the
//! gateway's one database owner; the bus never opens a connection of its own).
//!
//! Namespaces: `bus.retained` (key: topic), `bus.session` (key: client id; subscriptions, next
//! packet id, expiry interval, when its connection ended), `bus.queue` (key: 16 hex digits of a sequence number, `/`, client id; one message
//! each, queued or sent-and-unacknowledged), `bus.qos2in` (key: 4 hex digits of a packet id, `/`,
//! client id: a QoS 2 message received and not released yet), `bus.will` (key: client id: a will
//! waiting for its delay after its connection ended). Records: `persist_codec`.
//!
//! Written through, riding the store's batched commits (the outbox's power-cut window): retained
//! set/delete; a persistent session's creation, subscribe and unsubscribe; each QoS 1/2 message
//! queued while its persistent session is offline, rewritten when sent (so a crash before the
//! acknowledgement resends it with DUP) and deleted when acknowledged; an incoming QoS 2 packet
//! id from its PUBREC to PUBREL (so a resend after a crash is not delivered twice; never before
//! its message is written, never for a refused one); at detach, the
//! session's in-flight messages and whatever it still has queued. Clean sessions are never written;
//! messages queued for a connected session are written only when it detaches.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::codec::{AckKind, Packet};
use super::expiry::DelayedWill;
use super::outbox::Outbox;
use super::persist_codec::{self as rec, SessionRecord, Stage};
use super::router::{Attached, Sub};
use super::session::{Pending, SessionState};
use super::Message;
use crate::store::{StateWriter, Store, StoreError};

pub(crate) const NS_RETAINED: &str = "bus.retained";
pub(crate) const NS_SESSION: &str = "bus.session";
pub(crate) const NS_QUEUE: &str = "bus.queue";
pub(crate) const NS_QOS2_IN: &str = "bus.qos2in";
pub(crate) const NS_WILL: &str = "bus.will";

/// A sent message's store key and where its acknowledgement stands.
#[derive(Debug, Clone, Copy)]
struct Sent {
    key: u64,
    qos: u8,
    released: bool,
}

/// The store keys of a session's sent, unacknowledged messages, by packet id.
#[derive(Default)]
pub(crate) struct SentKeys(Mutex<PidMap>);

impl SentKeys {
    fn lock(&self) -> MutexGuard<'_, PidMap> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A map by packet id as a plain list: it holds at most the in-flight window, and every session
/// queue carries one, empty and unallocated unless the session is persistent.
#[derive(Default)]
pub(crate) struct PidMap(Vec<(u16, Sent)>);

impl PidMap {
    fn get_mut(&mut self, pid: &u16) -> Option<&mut Sent> {
        self.0.iter_mut().find(|(p, _)| p == pid).map(|(_, s)| s)
    }

    fn insert(&mut self, pid: u16, sent: Sent) {
        match self.get_mut(&pid) {
            Some(s) => *s = sent,
            None => self.0.push((pid, sent)),
        }
    }

    fn remove(&mut self, pid: &u16) -> Option<Sent> {
        let i = self.0.iter().position(|(p, _)| p == pid)?;
        Some(self.0.swap_remove(i).1)
    }

    fn values(&self) -> impl Iterator<Item = &Sent> {
        self.0.iter().map(|(_, s)| s)
    }

    fn into_values(self) -> impl Iterator<Item = Sent> {
        self.0.into_iter().map(|(_, s)| s)
    }
}

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

    /// A retained message was set (or, with an empty payload, deleted). `$SYS` is not kept: the
    /// broker republishes it.
    pub fn retained(&self, msg: &Message) {
        if msg.topic.starts_with("$SYS/") {
            return;
        }
        if msg.payload.is_empty() {
            self.store.delete(NS_RETAINED, msg.topic.clone());
        } else {
            let value = rec::encode_message(msg, Stage::Queued);
            self.store.put(NS_RETAINED, msg.topic.clone(), value);
        }
    }

    /// Queues a QoS 1/2 `msg` for the offline persistent session `client`, durably; returns
    /// how many messages were dropped (see [`Outbox::push`]).
    pub fn queue(&self, client: &str, outbox: &Outbox, msg: Message) -> u64 {
        let seq = self.seq();
        let value = rec::encode_message(&msg, Stage::Queued);
        let pushed = outbox.push_keyed(msg, Some(seq), |old| self.delete_queued(client, old));
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
        out: &Outbox,
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
    pub fn discard(&self, client: &str, out: &Outbox, incoming_qos2: &[u16]) {
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
    pub fn sent(&self, client: &str, out: &Outbox, key: u64, msg: &Message, packet: &Packet) {
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

    /// A packet from the client of attachment `a`, before its session handles it: settles
    /// acknowledgements (see [`Persist::acked`]); a PUBREL ends the stored packet id of an
    /// incoming QoS 2 message.
    pub fn received(&self, a: &Attached, packet: &Packet) {
        self.acked(&a.client_id, &a.outbox, packet);
        match packet {
            Packet::Pubrel(pid)
            | Packet::Ack {
                kind: AckKind::Pubrel,
                pid,
                ..
            } if a.persistent => self.store.delete(NS_QOS2_IN, qos2_key(&a.client_id, *pid)),
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
    pub fn acked(&self, client: &str, out: &Outbox, packet: &Packet) {
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
    }
}

/// A persistent session as a restart found it.
pub(crate) struct RestoredSession {
    pub client_id: String,
    pub subs: Vec<(String, Sub)>,
    pub saved: SessionState,
    pub outbox: Arc<Outbox>,
    /// Session Expiry Interval, seconds, as last written.
    pub expiry: u32,
    /// When its last connection ended: as stored, or the load if it was connected at a crash.
    pub ended: SystemTime,
    /// Its last connection's will, still waiting for its delay.
    pub will: Option<DelayedWill>,
}

/// Unreadable records logged one by one at load; beyond that they are only counted.
const LOG_BAD: usize = 10;

/// What the store held for the bus.
#[derive(Default)]
pub(crate) struct Restored {
    pub retained: Vec<Message>,
    pub sessions: Vec<RestoredSession>,
    /// Sessions whose expiry passed while the gateway was down (deleted with their queues).
    pub expired_sessions: usize,
    /// The wills of those sessions: their session ended, so they are due now.
    pub due_wills: Vec<Message>,
}

/// When the connection of session record `r` ended. One written while connected
/// (`disconnected_at` 0) was connected when its run crashed (a stop rewrites it as disconnected),
/// so it ended at `crash`.
fn connection_ended(r: &SessionRecord, crash: SystemTime) -> SystemTime {
    match r.disconnected_at {
        0 => crash,
        t => UNIX_EPOCH + Duration::from_secs(t),
    }
}

/// A session record whose expiry interval ran out between its connection's end and `now`.
fn session_expired(r: &SessionRecord, ended: SystemTime, now: SystemTime) -> bool {
    r.expiry == 0 || super::expiry::deadline(ended, r.expiry).is_some_and(|d| d <= now)
}

/// Reads the bus's records back. Each session's queue is refilled through an outbox from
/// `new_outbox`, so the configured limits and drop policy bound it; what they drop is deleted,
/// and so are messages whose session has no record. A record that does not decode is logged
/// with its key and skipped, but left in place: it may be a newer version's.
pub(crate) async fn load(
    store: Store,
    new_outbox: impl Fn() -> Outbox,
) -> Result<(Persist, Restored), StoreError> {
    let mut restored = Restored::default();
    let now = rec::unix_now();
    let wall_now = SystemTime::now();
    // The crash is taken to be the store's last commit before this run: the latest moment the
    // crashed run is known alive, costing no write of its own (within one commit interval of
    // the crash while anything changes; on a store idle for a while, that long before it).
    let crash = store.previous_commit().unwrap_or(wall_now).min(wall_now);
    let mut expired = 0usize;
    let mut bad = 0usize;
    let mut skip = |ns: &str, key: &str, why: &str| {
        // The first few by name; the rest are counted in the summary below.
        if bad < LOG_BAD {
            tracing::warn!("local broker: stored record {ns}/{key:?} unreadable ({why}); skipped");
        }
        bad += 1;
    };
    for (topic, value) in store.state_load(NS_RETAINED).await? {
        match rec::decode_message(&value, now) {
            Ok(d) if d.expired => {
                store.state_delete(NS_RETAINED, &topic);
                expired += 1;
            }
            Ok(d) if d.msg.topic == topic && !d.msg.payload.is_empty() => {
                let (msg, _) = d.counting_down();
                restored.retained.push(Message {
                    retain: true,
                    ..msg
                });
            }
            Ok(_) => skip(NS_RETAINED, &topic, "topic or payload does not fit"),
            Err(e) => skip(NS_RETAINED, &topic, &e),
        }
    }
    let mut sessions = BTreeMap::new();
    let mut unreadable = HashSet::new();
    let mut ended_at_load = HashSet::new();
    for (client, value) in store.state_load(NS_SESSION).await? {
        match rec::decode_session(&value) {
            // Its deadline passed while the gateway was down: it goes, and its queued messages
            // and QoS 2 ids below go with it as orphans.
            Ok(r) if session_expired(&r, connection_ended(&r, crash), wall_now) => {
                store.state_delete(NS_SESSION, &client);
                restored.expired_sessions += 1;
                ended_at_load.insert(client);
            }
            Ok(r) => {
                let ended = connection_ended(&r, crash);
                if r.disconnected_at == 0 {
                    // Stored as ended then, so that a later restart counts from the crash too.
                    let since = ended.duration_since(UNIX_EPOCH).unwrap_or_default();
                    let record = SessionRecord {
                        disconnected_at: since.as_secs().max(1),
                        ..r.clone()
                    };
                    store.state_put(NS_SESSION, &client, rec::encode_session(&record));
                }
                let saved = SessionState {
                    inflight: Vec::new(),
                    next_pid: r.next_pid,
                    incoming_qos2: Vec::new(),
                };
                let subs = r
                    .subs
                    .into_iter()
                    .map(|(f, o, id)| (f, Sub::from_options(o, id)))
                    .collect();
                let outbox = Arc::new(new_outbox());
                sessions.insert(client, (subs, saved, outbox, r.expiry, ended, None));
            }
            Err(e) => {
                skip(NS_SESSION, &client, &e);
                unreadable.insert(client);
            }
        }
    }
    let mut next_seq = 1;
    let (mut queued, mut inflight) = (0usize, 0usize);
    // Sorted by key, i.e. by sequence number: each session's messages come in their order.
    for (key, value) in store.state_load(NS_QUEUE).await? {
        let Some((seq, client)) = parse_queue_key(&key) else {
            skip(NS_QUEUE, &key, "malformed key");
            continue;
        };
        next_seq = next_seq.max(seq + 1);
        let Some((_, saved, outbox, ..)) = sessions.get_mut(client) else {
            if !unreadable.contains(client) {
                // Its session record went and this delete did not make it: an orphan.
                store.state_delete(NS_QUEUE, &key);
            }
            continue;
        };
        let (msg, stage) = match rec::decode_message(&value, now) {
            Ok(d) if d.msg.qos == 0 => {
                skip(NS_QUEUE, &key, "QoS 0 message");
                continue;
            }
            // Not sent yet and expired: MQTT 5 says drop it. One already sent is completed.
            Ok(d) if d.expired && d.stage == Stage::Queued => {
                store.state_delete(NS_QUEUE, &key);
                expired += 1;
                continue;
            }
            Ok(d) => d.counting_down(),
            Err(e) => {
                skip(NS_QUEUE, &key, &e);
                continue;
            }
        };
        let pid = match stage {
            Stage::Queued => {
                let mut evicted = 0;
                let pushed = outbox.push_keyed(msg, Some(seq), |old| {
                    store.state_delete(NS_QUEUE, &queue_key(client, old));
                    evicted += 1;
                });
                queued = queued + usize::from(pushed.keyed) - evicted;
                if !pushed.keyed {
                    store.state_delete(NS_QUEUE, &key);
                }
                continue;
            }
            Stage::Sent(pid) | Stage::Released(pid) => pid,
        };
        if saved.inflight.iter().any(|(p, _)| *p == pid) {
            skip(NS_QUEUE, &key, &format!("packet id {pid} in flight twice"));
            continue;
        }
        let released = matches!(stage, Stage::Released(_));
        let s = Sent {
            key: seq,
            qos: msg.qos,
            released,
        };
        outbox.sent.lock().insert(pid, s);
        let pending = match released {
            true => Pending::Released,
            false => Pending::Publish(msg),
        };
        saved.inflight.push((pid, pending));
        inflight += 1;
    }
    for (key, _) in store.state_load(NS_QOS2_IN).await? {
        let Some((pid, client)) = parse_qos2_key(&key) else {
            skip(NS_QOS2_IN, &key, "malformed key");
            continue;
        };
        match sessions.get_mut(client) {
            Some((_, saved, ..)) => saved.incoming_qos2.push(pid),
            None if unreadable.contains(client) => {}
            None => store.state_delete(NS_QOS2_IN, &key),
        }
    }
    for (client, value) in store.state_load(NS_WILL).await? {
        if unreadable.contains(&client) {
            continue;
        }
        let will = match rec::decode_will(&value) {
            Ok((delay, msg)) => DelayedWill { msg, delay },
            Err(e) => {
                skip(NS_WILL, &client, &e);
                continue;
            }
        };
        match sessions.get_mut(&client) {
            Some((.., w)) => *w = Some(will),
            None => {
                store.state_delete(NS_WILL, &client);
                if ended_at_load.contains(&client) {
                    restored.due_wills.push(will.msg);
                }
            }
        }
    }
    let n = sessions.len();
    restored.sessions = sessions
        .into_iter()
        .map(
            |(client_id, (subs, saved, outbox, expiry, ended, will))| RestoredSession {
                client_id,
                subs,
                saved,
                outbox,
                expiry,
                ended,
                will,
            },
        )
        .collect();
    let gone = restored.expired_sessions;
    if n + restored.retained.len() + expired + bad + gone > 0 {
        let mut note = String::new();
        if gone > 0 {
            note += &format!("; {gone} sessions expired while stopped, deleted");
        }
        if expired > 0 {
            note += &format!("; {expired} expired messages dropped");
        }
        if bad > 0 {
            note += &format!("; {bad} unreadable records skipped");
        }
        tracing::info!(
            "local broker: restored {n} persistent sessions ({queued} queued and {inflight} \
             in-flight messages) and {} retained messages{note}",
            restored.retained.len(),
        );
    }
    let persist = Persist {
        store: store.state_writer(),
        next_seq: AtomicU64::new(next_seq),
    };
    Ok((persist, restored))
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;

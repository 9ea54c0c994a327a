//! Reading the bus's records back at start (see `persist`): sessions with their queues,
//! in-flight messages, QoS 2 ids and waiting wills, and retained messages; what expired while the
//! gateway was down is deleted.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::store::{Store, StoreError};

/// A persistent session as a restart found it.
pub(crate) struct RestoredSession {
    pub client_id: String,
    pub subs: Vec<(String, Sub)>,
    pub saved: SessionState,
    pub queue: Arc<ClientQueue>,
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
    r.expiry == 0 || crate::bus::expiry::deadline(ended, r.expiry).is_some_and(|d| d <= now)
}

/// Reads the bus's records back. Each session's queue is refilled through a [`ClientQueue`] from
/// `new_queue`, so the configured limits and drop policy bound it; what they drop is deleted,
/// and so are messages whose session has no record. A record that does not decode is logged
/// with its key and skipped, but left in place: it may be a newer version's.
pub(crate) async fn load(
    store: Store,
    new_queue: impl Fn() -> ClientQueue,
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
                let queue = Arc::new(new_queue());
                sessions.insert(client, (subs, saved, queue, r.expiry, ended, None));
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
        let Some((_, saved, queue, ..)) = sessions.get_mut(client) else {
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
                let pushed = queue.push_keyed(msg, Some(seq), |old| {
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
        queue.sent.lock().insert(pid, s);
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
            |(client_id, (subs, saved, queue, expiry, ended, will))| RestoredSession {
                client_id,
                subs,
                saved,
                queue,
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
        own: Default::default(),
    };
    Ok((persist, restored))
}

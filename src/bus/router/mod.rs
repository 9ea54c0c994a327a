//! The router: client sessions (subscriptions, outgoing queues, expiry, delayed wills), the
//! retained store, shared subscription groups, in-process subscriptions, and fan-out of every
//! message to whoever matches.
//!
//! All of it sits behind one `std` mutex that is never held across an `.await`: fan-out to network
//! clients is a push into their bounded [`ClientQueue`] (a full one of a connected client is waited on
//! briefly after releasing the lock, see [`ClientQueue::push_waiting`]); fan-out to in-process
//! subscribers collects their senders under the lock and awaits room after releasing it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, Notify};

pub(crate) use super::ack::Commit;
use super::auth::AuthConfig;
pub(crate) use super::client_queue::ClientQueue;
use super::codec::reason::connack;
use super::codec::SubOptions;
use super::expiry::DelayedWill;
use super::persist::{Persist, Restored};
use super::session::SessionState;
use super::shared::Groups;
pub(crate) use super::subscription::Sub;
use super::{topic, BusStats, Message, MessageProps, QueueDrop};

/// How long a new connection waits for the one it takes over to hand back its session.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Stats {
    pub clients_connected: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped: AtomicU64,
    pub denied: AtomicU64,
    pub refused: AtomicU64,
    pub malformed: AtomicU64,
    pub expired: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BusStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BusStats {
            clients_connected: get(&self.clients_connected),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            dropped: get(&self.dropped),
            denied: get(&self.denied),
            refused: get(&self.refused),
            malformed: get(&self.malformed),
            expired: get(&self.expired),
        }
    }
}

struct ConnInfo {
    id: u64,
    /// Dropped with this `ConnInfo` when the connection detaches: wakes a new connection waiting
    /// to take the client id over. Set only then, so a connection carries no token of its own.
    on_release: Option<oneshot::Sender<()>>,
    /// Set when a new connection takes this one over: whether the new one starts a clean session.
    taken_over_clean: Option<bool>,
}

struct ClientEntry {
    /// Session Expiry Interval, seconds ([`super::expiry::NEVER`]: never). Offline entries have
    /// a non-zero one: a session with 0 ends with its connection.
    expiry: u32,
    /// Filter -> subscription, in subscription order. Shared subscriptions are in
    /// `State::shared`.
    subs: Vec<(String, Sub)>,
    queue: std::sync::Arc<ClientQueue>,
    /// What the last connection of a persistent session left behind, if anything (boxed: an
    /// entry per connected client would otherwise carry room for it).
    saved: Option<Box<SessionState>>,
    conn: Option<ConnInfo>,
    /// Wall-clock time the last connection ended; `None` while connected.
    ended: Option<SystemTime>,
    /// The last connection's will, waiting for its delay (boxed: most sessions have none).
    will: Option<Box<DelayedWill>>,
}

static NOTHING_SAVED: SessionState = SessionState {
    inflight: Vec::new(),
    next_pid: 0,
    incoming_qos2: Vec::new(),
};

fn boxed(state: SessionState) -> Option<Box<SessionState>> {
    (state != SessionState::default()).then(|| Box::new(state))
}

impl ClientEntry {
    fn saved(&self) -> &SessionState {
        self.saved.as_deref().unwrap_or(&NOTHING_SAVED)
    }
}

struct InprocSub {
    filters: Vec<String>,
    tx: InprocTx,
}

/// A message for a durable in-process subscription, with what to fire once it is durable when
/// the publisher's acknowledgement waits for it.
pub(crate) type Durable = (Message, Option<oneshot::Sender<()>>);

#[derive(Clone)]
enum InprocTx {
    Plain(mpsc::Sender<Message>),
    Durable(mpsc::Sender<Durable>),
}

#[derive(Default)]
struct State {
    /// Boxed: a map grows in powers of two, and every idle slot would hold a whole entry.
    clients: HashMap<String, Box<ClientEntry>>,
    retained: BTreeMap<String, Message>,
    inproc: HashMap<u64, InprocSub>,
    /// Shared subscription groups; members with their subscription.
    shared: Groups<Sub>,
    connected: usize,
    next_id: u64,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

pub(crate) enum ConnectOutcome {
    Accepted(Attached),
    /// CONNACK return code to send before closing.
    Refused(u8),
}

pub(crate) struct Attached {
    pub conn_id: u64,
    pub client_id: String,
    pub session_present: bool,
    /// What a resumed session left unacknowledged; boxed, and only when there is something,
    /// because the connection keeps this struct for its whole life.
    pub restored: Option<Box<SessionState>>,
    pub queue: std::sync::Arc<ClientQueue>,
    /// Not a clean session: its state is kept in the store, when there is one.
    pub persistent: bool,
}

/// What a connection hands back to the router when it ends.
#[derive(Debug, Default)]
pub(crate) struct Detach {
    pub state: SessionState,
    /// The will, unless DISCONNECT discarded it (ACL already checked).
    pub will: Option<DelayedWill>,
    /// A Session Expiry Interval set by DISCONNECT, replacing the one from CONNECT.
    pub expiry: Option<u32>,
}

pub(crate) struct Router {
    state: Mutex<State>,
    pub stats: Stats,
    pub auth: AuthConfig,
    max_connections: usize,
    /// `broker.max_session_expiry` in seconds: caps every session's expiry interval.
    max_session_expiry: u32,
    max_queued: usize,
    max_queued_bytes: usize,
    queue_drop: QueueDrop,
    /// Wakes the expiry task when a session deadline or delayed will appears.
    lifetime: Notify,
    /// Writes persistent sessions and retained messages to the store, when there is one.
    pub persist: Option<Persist>,
}

impl Router {
    pub fn new(max_connections: usize, max_queued: usize) -> Router {
        Router {
            state: Mutex::new(State::default()),
            stats: Stats::default(),
            auth: AuthConfig::default(),
            max_connections,
            max_session_expiry: super::expiry::NEVER,
            max_queued,
            max_queued_bytes: usize::MAX,
            queue_drop: QueueDrop::Oldest,
            lifetime: Notify::new(),
            persist: None,
        }
    }

    pub fn configured(cfg: &crate::bus::BrokerConfig) -> Router {
        Router {
            auth: cfg.auth.clone(),
            max_queued_bytes: cfg.max_queued_bytes,
            queue_drop: cfg.queue_drop,
            max_session_expiry: cfg.max_session_expiry.map_or(super::expiry::NEVER, |d| {
                u32::try_from(d.as_secs()).unwrap_or(super::expiry::NEVER)
            }),
            ..Router::new(cfg.max_connections, cfg.max_queued_messages)
        }
    }

    /// A session queue with the configured limits.
    pub fn new_queue(&self) -> ClientQueue {
        ClientQueue::bounded(self.max_queued, self.max_queued_bytes, self.queue_drop)
    }

    /// Takes in what the store held from the last run (before any client connects); returns
    /// the wills to publish now (of sessions that expired while the gateway was stopped).
    pub fn restore(&mut self, restored: Restored) -> Vec<Message> {
        Stats::add(&self.stats.expired, restored.expired_sessions as u64);
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for msg in restored.retained {
            st.retained.insert(msg.topic.clone(), msg);
        }
        for mut s in restored.sessions {
            let shared = |f: &String| f.starts_with(topic::SHARE_PREFIX);
            for (filter, sub) in s.subs.iter().filter(|(f, _)| shared(f)) {
                st.shared.subscribe(filter, &s.client_id, *sub);
            }
            s.subs.retain(|(f, _)| !shared(f));
            // The cap may have been lowered since the record was written.
            let entry = ClientEntry {
                expiry: s.expiry.min(self.max_session_expiry),
                subs: s.subs,
                queue: s.queue,
                saved: boxed(s.saved),
                conn: None,
                ended: Some(s.ended),
                will: s.will.map(Box::new),
            };
            st.clients.insert(s.client_id, Box::new(entry));
        }
        let due = restored.due_wills.into_iter();
        due.map(lifetime::published_now).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a connection to the session of `client_id` (assigning an id when `None`),
    /// taking over any connection that holds that id now. `clean_start` discards a previous
    /// session; `expiry` is this connection's Session Expiry Interval in seconds (3.1.1: 0 with
    /// clean session, else [`super::expiry::NEVER`]). A connection being taken over is waited for
    /// until it has called [`Router::detach`] (at most `TAKEOVER_WAIT`). A delayed will of a previous
    /// session is dropped, unless its delay or its session had run out before (then it is published).
    pub async fn connect(
        &self,
        client_id: Option<String>,
        clean_start: bool,
        expiry: u32,
    ) -> ConnectOutcome {
        let client_id = match client_id {
            Some(id) => id,
            None => {
                let mut st = self.lock();
                loop {
                    let id = format!("edgegate-{}-{:08x}", st.next_id(), fastrand::u32(..));
                    if !st.clients.contains_key(&id) {
                        break id;
                    }
                }
            }
        };
        for _ in 0..3 {
            let holder = {
                let mut st = self.lock();
                let entry = st.clients.get_mut(&client_id);
                match entry.and_then(|e| Some((e.queue.clone(), e.conn.as_mut()?))) {
                    Some((queue, c)) => {
                        // Tells the old connection's detach whether its session ends now.
                        c.taken_over_clean = Some(clean_start);
                        let (tx, released) = oneshot::channel();
                        c.on_release = Some(tx);
                        Ok((c.id, queue, released))
                    }
                    None => Err(self.attach(&mut st, client_id.clone(), clean_start, expiry)),
                }
            };
            let (old_id, old_queue, released) = match holder {
                Ok(holder) => holder,
                Err((outcome, ended_will)) => {
                    if let Some(will) = ended_will {
                        self.route(will).await;
                    }
                    return outcome;
                }
            };
            tracing::debug!(client_id, "client id taken over by a new connection");
            old_queue.kick(old_id);
            let _ = tokio::time::timeout(TAKEOVER_WAIT, released).await;
            // Normally the old connection has detached itself by now and this does nothing; if it
            // is stuck (or its task died) it loses its unacknowledged state but not the id.
            let mut st = self.lock();
            self.release(&mut st, &client_id, old_id, Detach::default());
        }
        ConnectOutcome::Refused(connack::SERVER_UNAVAILABLE)
    }

    /// Attaches under the lock; also returns the will of a previous session that ends here.
    fn attach(
        &self,
        st: &mut State,
        client_id: String,
        clean_start: bool,
        expiry: u32,
    ) -> (ConnectOutcome, Option<Message>) {
        if st.connected >= self.max_connections {
            return (ConnectOutcome::Refused(connack::SERVER_UNAVAILABLE), None);
        }
        let conn_id = st.next_id();
        let conn = ConnInfo {
            id: conn_id,
            on_release: None,
            taken_over_clean: None,
        };
        let mut ended_will = None;
        let existing = match st.clients.remove(&client_id) {
            Some(mut e) => {
                // The sweep may not have got to it yet.
                let now = SystemTime::now();
                let ran_out = |secs| {
                    e.ended
                        .and_then(|t| super::expiry::deadline(t, secs))
                        .is_some_and(|d| d <= now)
                };
                let expired = ran_out(e.expiry);
                if expired {
                    Stats::add(&self.stats.expired, 1);
                }
                // Back before the will delay passed: no will, with clean start too
                // (MQTT-3.1.2-8). One whose delay or session ran out before is due now.
                let waiting = e.will.take();
                let had_will = waiting.is_some();
                ended_will = waiting
                    .filter(|w| expired || ran_out(w.delay))
                    .map(|w| w.msg);
                if clean_start || expired {
                    st.shared.remove_client(&client_id);
                    if let Some(p) = &self.persist {
                        p.discard(&client_id, &e.queue, &e.saved().incoming_qos2);
                    }
                    None
                } else {
                    if let (true, Some(p)) = (had_will, &self.persist) {
                        p.will_done(&client_id);
                    }
                    Some(e)
                }
            }
            None => None,
        };
        let session_present = existing.is_some();
        let mut entry = existing.unwrap_or_else(|| {
            Box::new(ClientEntry {
                expiry,
                subs: Vec::new(),
                queue: std::sync::Arc::new(self.new_queue()),
                saved: None,
                conn: None,
                ended: None,
                will: None,
            })
        });
        entry.expiry = expiry.min(self.max_session_expiry);
        entry.ended = None;
        let persistent = entry.expiry != 0;
        // Also when resumed: the record must say connected (and this CONNECT's interval), or a
        // crash now would have the next start expire it from its old disconnection.
        if let (true, Some(p)) = (persistent, &self.persist) {
            let subs = stored_subs(&entry.subs, &st.shared, &client_id);
            p.session(&client_id, &subs, entry.saved(), entry.expiry, true);
        }
        entry.conn = Some(conn);
        let restored = entry.saved.take();
        let queue = entry.queue.clone();
        st.clients.insert(client_id.clone(), entry);
        st.connected += 1;
        self.set_connected(st);
        let attached = Attached {
            conn_id,
            client_id,
            session_present,
            restored,
            queue,
            persistent,
        };
        (ConnectOutcome::Accepted(attached), ended_will)
    }

    fn set_connected(&self, st: &State) {
        self.stats
            .clients_connected
            .store(st.connected as u64, Ordering::Relaxed);
    }

    /// Detaches connection `conn_id` from its session, keeping `end.state` if the session
    /// outlives the connection. Returns the will to publish now: at once when its delay is 0 or
    /// the session ends now; on a takeover only if the session ends (the new connection starts
    /// clean, or the expiry is 0), MQTT 5 3.1.3.2.2. A later will is published by the expiry
    /// task. Does nothing if that connection was already replaced.
    pub fn detach(&self, client_id: &str, conn_id: u64, end: Detach) -> Option<Message> {
        let mut st = self.lock();
        self.release(&mut st, client_id, conn_id, end)
    }

    fn release(
        &self,
        st: &mut State,
        client_id: &str,
        conn_id: u64,
        end: Detach,
    ) -> Option<Message> {
        let entry = st.clients.get_mut(client_id)?;
        let conn = entry.conn.take_if(|c| c.id == conn_id)?;
        let stored = entry.expiry != 0;
        if let Some(expiry) = end.expiry {
            entry.expiry = expiry.min(self.max_session_expiry);
        }
        let ends = entry.expiry == 0;
        let mut will_now = None;
        match (end.will, conn.taken_over_clean) {
            (None, _) => {}
            (Some(w), Some(new_clean)) => will_now = (new_clean || ends).then_some(w.msg),
            (Some(w), None) if w.delay == 0 || ends => will_now = Some(w.msg),
            (Some(w), None) => entry.will = Some(Box::new(w)),
        }
        if ends {
            // DISCONNECT set 0 on a session the store holds: it goes from there too.
            if let (true, Some(p)) = (stored, &self.persist) {
                p.discard(client_id, &entry.queue, &end.state.incoming_qos2);
            }
            st.clients.remove(client_id);
            st.shared.remove_client(client_id);
        } else {
            entry.saved = boxed(end.state);
            entry.ended = Some(SystemTime::now());
            let dropped = entry.queue.drop_qos0();
            Stats::add(&self.stats.dropped, dropped as u64);
            if entry.expiry != super::expiry::NEVER || entry.will.is_some() {
                self.lifetime.notify_one();
            }
            if let Some(p) = &self.persist {
                let subs = stored_subs(&entry.subs, &st.shared, client_id);
                p.detached(client_id, &subs, entry.saved(), entry.expiry, &entry.queue);
                if let Some(w) = &entry.will {
                    p.will_waiting(client_id, w);
                }
            }
        }
        st.connected -= 1;
        self.set_connected(st);
        will_now
    }

    /// Registers an in-process subscription (filters already validated). Returns its id, the
    /// receiver, and the retained messages it should see first (when `retained`).
    pub fn subscribe_inproc(
        &self,
        filters: Vec<String>,
        capacity: usize,
        retained: bool,
    ) -> (u64, mpsc::Receiver<Message>, VecDeque<Message>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (id, pending) = self.add_inproc(filters, InprocTx::Plain(tx), retained);
        (id, rx, pending)
    }

    /// A durable in-process subscription (filters already validated): what it receives at QoS
    /// 1/2 from a network client comes with a sender that the client's PUBACK/PUBREC waits for.
    pub fn subscribe_durable(
        &self,
        filters: Vec<String>,
        capacity: usize,
    ) -> (u64, mpsc::Receiver<Durable>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (self.add_inproc(filters, InprocTx::Durable(tx), false).0, rx)
    }

    fn add_inproc(
        &self,
        filters: Vec<String>,
        tx: InprocTx,
        retained: bool,
    ) -> (u64, VecDeque<Message>) {
        let mut st = self.lock();
        let now = std::time::Instant::now();
        let pending = if retained {
            st.retained
                .values()
                .filter(|m| !m.props.as_ref().is_some_and(|p| p.expired(now)))
                .filter(|m| filters.iter().any(|f| topic::matches(f, &m.topic)))
                .cloned()
                .collect()
        } else {
            VecDeque::new()
        };
        let id = st.next_id();
        st.inproc.insert(id, InprocSub { filters, tx });
        (id, pending)
    }

    pub fn unsubscribe_inproc(&self, id: u64) {
        self.lock().inproc.remove(&id);
    }

    /// On shutdown: ends every attached connection's wait (see `server::Connection::serve`).
    pub fn kick_all(&self) {
        for entry in self.lock().clients.values() {
            if let Some(c) = &entry.conn {
                entry.queue.kick(c.id);
            }
        }
    }

    /// After shutdown: drop in-process senders so their `recv` ends once drained.
    pub fn close_inproc(&self) {
        self.lock().inproc.clear();
    }
}

/// What the store keeps as a session's subscriptions: its own and its shared group memberships.
fn stored_subs(
    subs: &[(String, Sub)],
    shared: &Groups<Sub>,
    client_id: &str,
) -> Vec<(String, Sub)> {
    let mut all = subs.to_vec();
    all.extend(shared.of_client(client_id));
    all
}

mod fanout;

mod lifetime;
pub(crate) mod tasks;

#[cfg(test)]
mod tests;

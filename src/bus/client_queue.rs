//! A client session's outgoing queue: bounded, with a drop policy, and brief backpressure on
//! publishers while a connected consumer drains it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::sent_keys::SentKeys;
use super::{Message, QueueDrop};

/// How long a publisher waits for room in a connected subscriber's full queue before that
/// subscriber counts as stalled and its queue drops.
const STALL_WAIT: Duration = Duration::from_millis(50);

/// A client session's outgoing queue, bounded by message count and bytes (topic + payload +
/// MQTT 5 properties).
/// When full, [`QueueDrop::Oldest`] drops a QoS 0 newcomer or evicts the oldest queued messages
/// to make room for a QoS 1/2 one; [`QueueDrop::Newest`] drops the newcomer. The connection task
/// drains it.
pub(crate) struct ClientQueue {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Signalled when a pop makes room, for publishers waiting in [`ClientQueue::push_waiting`].
    room: Notify,
    /// The consumer let a publisher wait in vain: drop at once until it catches up to half.
    stalled: AtomicBool,
    cap: usize,
    max_bytes: usize,
    policy: QueueDrop,
    /// Store keys of this session's sent, unacknowledged messages (see `persist`).
    pub(crate) sent: SentKeys,
    /// The connection (router id) told to end because another took its client id over or the
    /// broker shuts down; `control` wakes it. Kept here rather than in a token per connection:
    /// the queue is shared with the router already.
    kicked: AtomicU64,
    control: Notify,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
    /// Store keys of the first `keys.len()` messages (see `persist`): a session's persisted
    /// messages always come first, because only an offline session's queue is written.
    keys: VecDeque<u64>,
}

/// What [`ClientQueue::push_keyed`] did.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    /// The newcomer is in the queue.
    pub queued: bool,
    /// ... under the key it was given.
    pub keyed: bool,
    /// Messages dropped: the newcomer or older ones.
    pub dropped: u64,
}

fn size(msg: &Message) -> usize {
    msg.topic.len() + msg.payload.len() + msg.props.as_ref().map_or(0, |p| p.size())
}

impl ClientQueue {
    #[cfg(test)]
    pub fn new(cap: usize) -> ClientQueue {
        ClientQueue::bounded(cap, usize::MAX, QueueDrop::Oldest)
    }

    pub fn bounded(cap: usize, max_bytes: usize, policy: QueueDrop) -> ClientQueue {
        ClientQueue {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            room: Notify::new(),
            stalled: AtomicBool::new(false),
            cap: cap.max(1),
            max_bytes,
            policy,
            sent: SentKeys::default(),
            kicked: AtomicU64::new(0),
            control: Notify::new(),
        }
    }

    /// Tells connection `conn_id` (if it is the one draining this queue) to end.
    pub fn kick(&self, conn_id: u64) {
        self.kicked.store(conn_id, Ordering::Release);
        // A stored permit if it is not waiting yet; a later connection ignores a stale one.
        self.control.notify_one();
    }

    /// Resolves once connection `conn_id` has been told to end. Cancel-safe.
    pub async fn kicked(&self, conn_id: u64) {
        while self.kicked.load(Ordering::Acquire) != conn_id {
            self.control.notified().await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg`; returns how many messages (this one or older ones) were dropped.
    pub fn push(&self, msg: Message) -> u64 {
        self.push_keyed(msg, None, |_| {}).dropped
    }

    /// [`ClientQueue::push`], recording the newcomer's store key: only while every queued message
    /// has one (else the key is not taken and `queued` tells whether it was queued unkeyed).
    /// `evicted` gets the keys of older messages it evicts, for deletion from the store.
    pub(crate) fn push_keyed(
        &self,
        msg: Message,
        key: Option<u64>,
        mut evicted: impl FnMut(u64),
    ) -> Pushed {
        let len = size(&msg);
        let mut q = self.lock();
        let full = |q: &Queue| q.messages.len() >= self.cap || q.bytes + len > self.max_bytes;
        let refused = Pushed {
            dropped: 1,
            ..Pushed::default()
        };
        if len > self.max_bytes {
            return refused;
        }
        let mut pushed = Pushed::default();
        if full(&q) {
            if self.policy == QueueDrop::Newest || msg.qos == 0 {
                return refused;
            }
            while full(&q) {
                let Some(old) = q.messages.pop_front() else {
                    break;
                };
                q.bytes -= size(&old);
                pushed.dropped += 1;
                if let Some(k) = q.keys.pop_front() {
                    evicted(k);
                }
            }
        }
        if let Some(key) = key {
            if q.keys.len() == q.messages.len() {
                q.keys.push_back(key);
                pushed.keyed = true;
            }
        }
        q.bytes += len;
        q.messages.push_back(msg);
        pushed.queued = true;
        drop(q);
        self.notify.notify_one();
        pushed
    }

    pub fn is_empty(&self) -> bool {
        self.lock().messages.is_empty()
    }

    #[cfg(test)]
    pub fn pop(&self) -> Option<Message> {
        self.pop_keyed().map(|(m, _)| m)
    }

    /// The next message, with its store key if it has one.
    pub fn pop_keyed(&self) -> Option<(Message, Option<u64>)> {
        let mut q = self.lock();
        let msg = q.messages.pop_front()?;
        let key = q.keys.pop_front();
        q.bytes -= size(&msg);
        if q.messages.len() <= self.cap / 2 && q.bytes <= self.max_bytes / 2 {
            self.stalled.store(false, Ordering::Relaxed);
        }
        drop(q);
        self.room.notify_waiters();
        Some((msg, key))
    }

    /// Gives every queued message without a store key one from `key_for` (which writes it).
    pub(crate) fn key_rest(&self, mut key_for: impl FnMut(&Message) -> u64) {
        let mut q = self.lock();
        let q = &mut *q;
        for msg in q.messages.iter().skip(q.keys.len()) {
            q.keys.push_back(key_for(msg));
        }
    }

    /// Takes the store keys of everything queued (the session is being discarded).
    pub(crate) fn take_keys(&self) -> Vec<u64> {
        self.lock().keys.drain(..).collect()
    }

    /// Whether `msg` would be queued without dropping anything, or the consumer is stalled
    /// (so waiting for it is pointless).
    pub(crate) fn fits_or_stalled(&self, msg: &Message) -> bool {
        let q = self.lock();
        (q.messages.len() < self.cap && q.bytes + size(msg) <= self.max_bytes)
            || self.stalled.load(Ordering::Relaxed)
    }

    /// [`ClientQueue::push`] after waiting up to `wait` for room: a connected consumer that is
    /// draining slows its publishers down (TCP backpressure) instead of losing messages; one that
    /// does not drain within `wait` is marked stalled and drops until it has caught up.
    pub async fn push_waiting(&self, msg: Message) -> u64 {
        let deadline = tokio::time::Instant::now() + STALL_WAIT;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.fits_or_stalled(&msg) {
                return self.push(msg);
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                self.stalled.store(true, Ordering::Relaxed);
                return self.push(msg);
            }
        }
    }

    /// Resolves after the next push (or at once if one happened since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    pub(crate) fn drop_qos0(&self) -> usize {
        let mut q = self.lock();
        let before = q.messages.len();
        // Keyed messages are QoS 1/2 (see `keys`), so they all stay, still first.
        q.messages.retain(|m| m.qos > 0);
        q.bytes = q.messages.iter().map(size).sum();
        before - q.messages.len()
    }
}

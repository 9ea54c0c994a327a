//! A client session's outgoing queue: bounded, with a drop policy, and brief backpressure on
//! publishers while a connected consumer drains it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Message, QueueDrop};

/// How long a publisher waits for room in a connected subscriber's full queue before that
/// subscriber counts as stalled and its queue drops.
const STALL_WAIT: Duration = Duration::from_millis(50);

/// A client session's outgoing queue, bounded by message count and bytes (topic + payload +
/// MQTT 5 properties).
/// When full, [`QueueDrop::Oldest`] drops a QoS 0 newcomer or evicts the oldest queued messages
/// to make room for a QoS 1/2 one; [`QueueDrop::Newest`] drops the newcomer. The connection task
/// drains it.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Signalled when a pop makes room, for publishers waiting in [`Outbox::push_waiting`].
    room: Notify,
    /// The consumer let a publisher wait in vain: drop at once until it catches up to half.
    stalled: AtomicBool,
    cap: usize,
    max_bytes: usize,
    policy: QueueDrop,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
}

fn size(msg: &Message) -> usize {
    msg.topic.len() + msg.payload.len() + msg.props.as_ref().map_or(0, |p| p.size())
}

impl Outbox {
    #[cfg(test)]
    pub fn new(cap: usize) -> Outbox {
        Outbox::bounded(cap, usize::MAX, QueueDrop::Oldest)
    }

    pub fn bounded(cap: usize, max_bytes: usize, policy: QueueDrop) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            room: Notify::new(),
            stalled: AtomicBool::new(false),
            cap: cap.max(1),
            max_bytes,
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg`; returns how many messages (this one or older ones) were dropped.
    pub fn push(&self, msg: Message) -> u64 {
        let len = size(&msg);
        let mut q = self.lock();
        let full = |q: &Queue| q.messages.len() >= self.cap || q.bytes + len > self.max_bytes;
        if len > self.max_bytes {
            return 1;
        }
        let mut dropped = 0;
        if full(&q) {
            if self.policy == QueueDrop::Newest || msg.qos == 0 {
                return 1;
            }
            while full(&q) {
                let Some(old) = q.messages.pop_front() else {
                    break;
                };
                q.bytes -= size(&old);
                dropped += 1;
            }
        }
        q.bytes += len;
        q.messages.push_back(msg);
        drop(q);
        self.notify.notify_one();
        dropped
    }

    pub fn is_empty(&self) -> bool {
        self.lock().messages.is_empty()
    }

    pub fn pop(&self) -> Option<Message> {
        let mut q = self.lock();
        let msg = q.messages.pop_front()?;
        q.bytes -= size(&msg);
        if q.messages.len() <= self.cap / 2 && q.bytes <= self.max_bytes / 2 {
            self.stalled.store(false, Ordering::Relaxed);
        }
        drop(q);
        self.room.notify_waiters();
        Some(msg)
    }

    /// Whether `msg` would be queued without dropping anything, or the consumer is stalled
    /// (so waiting for it is pointless).
    pub(crate) fn fits_or_stalled(&self, msg: &Message) -> bool {
        let q = self.lock();
        (q.messages.len() < self.cap && q.bytes + size(msg) <= self.max_bytes)
            || self.stalled.load(Ordering::Relaxed)
    }

    /// [`Outbox::push`] after waiting up to `wait` for room: a connected consumer that is
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
        q.messages.retain(|m| m.qos > 0);
        q.bytes = q.messages.iter().map(size).sum();
        before - q.messages.len()
    }
}

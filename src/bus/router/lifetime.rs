//! The router's side of session lifetime: delayed wills coming due and sessions expiring while
//! their client is away (driven by [`super::tasks::expire`]).

use std::time::{Duration, SystemTime};

use tokio::sync::futures::Notified;

use super::{Router, Stats};
use crate::bus::{expiry, Message, MessageProps};

impl Router {
    /// Resolves when a session deadline or delayed will was added after this was created.
    pub(crate) fn lifetime_changed(&self) -> Notified<'_> {
        self.lifetime.notified()
    }

    /// At `now`: takes the wills that are due (their delay passed, or their session ends now)
    /// and removes the sessions whose expiry interval has passed since their connection ended,
    /// with their queues. Returns the wills to publish and the next deadline, if any.
    pub(crate) fn sweep(&self, now: SystemTime) -> (Vec<Message>, Option<SystemTime>) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut wills = Vec::new();
        let mut expired = Vec::new();
        let mut next: Option<SystemTime> = None;
        let mut later = |t: SystemTime| next = Some(next.map_or(t, |n| n.min(t)));
        for (id, entry) in &mut st.clients {
            let Some(ended) = entry.ended else {
                continue; // connected
            };
            let end = expiry::deadline(ended, entry.expiry);
            if let Some(will) = &entry.will {
                let delayed = ended + Duration::from_secs(u64::from(will.delay));
                let due = end.map_or(delayed, |e| e.min(delayed));
                if due <= now {
                    wills.extend(entry.will.take().map(|w| published_now(w.msg)));
                    if let Some(p) = &self.persist {
                        p.will_done(id);
                    }
                } else {
                    later(due);
                }
            }
            match end {
                Some(e) if e <= now => expired.push(id.clone()),
                Some(e) => later(e),
                None => {}
            }
        }
        for id in &expired {
            if let (Some(e), Some(p)) = (st.clients.remove(id), &self.persist) {
                p.discard(id, &e.queue, &e.saved().incoming_qos2);
            }
            st.shared.remove_client(id);
            tracing::debug!(client_id = id, "session expired");
        }
        Stats::add(&self.stats.expired, expired.len() as u64);
        (wills, next)
    }

    /// Whether a session for `client_id` exists (connected or not).
    #[cfg(test)]
    pub(crate) fn has_session(&self, client_id: &str) -> bool {
        self.lock().clients.contains_key(client_id)
    }
}

/// A delayed will's Message Expiry Interval counts from when it is published (MQTT 5 3.1.3.2.4),
/// not from when its connection ended.
pub(super) fn published_now(mut msg: Message) -> Message {
    if let Some(p) = msg.props.as_mut() {
        std::sync::Arc::make_mut(p).expires_at = None;
    }
    MessageProps::start_expiry(&mut msg.props, std::time::Instant::now());
    msg
}

//! How many sessions one source may hold, and how long a session that never returns is kept:
//! without both, one address cycling client ids with clean session off fills `max_clients` for
//! good (and a restart brings the sessions back).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::qos::Wait;
use super::session::{Action, Client, Engine, State};

/// Sessions per source IP address (a forwarder's nodes share its address).
#[derive(Debug, Default)]
pub struct Sources(HashMap<IpAddr, usize>);

impl Sources {
    pub fn add(&mut self, ip: IpAddr) {
        *self.0.entry(ip).or_default() += 1;
    }

    pub fn remove(&mut self, ip: IpAddr) {
        if let Some(n) = self.0.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.remove(&ip);
            }
        }
    }

    /// A session moved from one address to another.
    pub fn moved(&mut self, from: IpAddr, to: IpAddr) {
        if from != to {
            self.remove(from);
            self.add(to);
        }
    }

    pub fn count(&self, ip: IpAddr) -> usize {
        self.0.get(&ip).copied().unwrap_or(0)
    }
}

/// Whether `c` has been silent past `expiry` with nothing else to end it: disconnected, lost,
/// or connected with keepalive 0. An asleep client is supervised by its sleep duration (and is
/// lost when it oversleeps), a connected one with a keepalive by that.
pub fn stale(c: &Client, expiry: Duration, now: Instant) -> bool {
    let unsupervised = match c.state {
        State::Disconnected | State::Lost => true,
        State::Active | State::WillTopic | State::WillMsg | State::Awake => c.keepalive == 0,
        State::Asleep { .. } => false,
    };
    unsupervised && now.saturating_duration_since(c.last_seen) > expiry
}

/// Messages a session holds for its client: the queue and an in-flight PUBLISH or PUBREL.
pub fn held(c: &Client) -> u64 {
    let inflight = c
        .out
        .inflight
        .as_ref()
        .is_some_and(|f| !matches!(f.wait, Wait::RegAck { .. }));
    c.out.queue.len() as u64 + u64::from(inflight)
}

impl Engine {
    /// Whether client `id` may have a session from `ip`: one it has already, or a new one within
    /// `max_clients`; and within the source's share unless it is from there already.
    pub(super) fn admits(&self, id: &str, ip: IpAddr) -> bool {
        let from = self.clients.get(id).map(|c| c.peer.addr.ip());
        if from.is_none() && self.clients.len() >= self.limits.max_clients {
            return false;
        }
        from == Some(ip) || self.sources.count(ip) < self.limits.max_clients_per_source
    }

    /// Removes a session that never came back (a connected one is lost first: its will goes
    /// out); what it held for its client is counted as dropped.
    pub(super) fn expire(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(c) = self.clients.get(id) else {
            return;
        };
        self.counters.sessions_expired += 1;
        self.counters.expired_dropped += held(c);
        if !matches!(c.state, State::Disconnected | State::Lost) {
            self.lose(id, out);
        }
        self.forget(id, out);
    }
}

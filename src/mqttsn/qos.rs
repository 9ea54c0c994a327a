//! Delivery state of one client: the outbound queue with its single in-flight exchange
//! (REGISTER, PUBLISH QoS 1/2, PUBREL) retransmitted every Tretry up to Nretry times with DUP
//! set, and the inbound message ids that make a DUP PUBLISH from the client harmless.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::codec::{Packet, Publish, Qos};

/// A message waiting for delivery to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
}

/// The one exchange the gateway waits on (MQTT-SN allows one at a time per client).
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    RegAck { topic_id: u16, msg_id: u16 },
    PubAck(Publish),
    PubRec(Publish),
    PubComp(u16),
}

impl Wait {
    pub fn msg_id(&self) -> u16 {
        match self {
            Wait::RegAck { msg_id, .. } | Wait::PubComp(msg_id) => *msg_id,
            Wait::PubAck(p) | Wait::PubRec(p) => p.msg_id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub wait: Wait,
    /// What was sent, resent on timeout (with DUP for a PUBLISH).
    pub packet: Packet,
    pub sent: Instant,
    pub retries: u32,
}

/// Outcome of a retransmission check.
pub enum Retry {
    Nothing,
    Resend(Packet),
    GiveUp,
}

#[derive(Debug, Default)]
pub struct Outbound {
    pub queue: VecDeque<Queued>,
    pub inflight: Option<Inflight>,
    next_id: u16,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
}

impl Outbound {
    pub fn next_msg_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Queues `m`; past `max` the oldest queued message is dropped. Returns whether one was.
    pub fn push(&mut self, m: Queued, max: usize) -> bool {
        let mut dropped = false;
        while self.queue.len() >= max.max(1) {
            self.queue.pop_front();
            self.dropped += 1;
            dropped = true;
        }
        self.queue.push_back(m);
        dropped
    }

    pub fn start(&mut self, wait: Wait, packet: Packet, now: Instant) {
        self.inflight = Some(Inflight {
            wait,
            packet,
            sent: now,
            retries: 0,
        });
    }

    pub fn idle(&self) -> bool {
        self.inflight.is_none() && self.queue.is_empty()
    }

    /// Whether the in-flight exchange is due for a resend, or has used up its retries.
    pub fn retry(&mut self, now: Instant, t_retry: Duration, n_retry: u32) -> Retry {
        let Some(f) = &mut self.inflight else {
            return Retry::Nothing;
        };
        if now.duration_since(f.sent) < t_retry {
            return Retry::Nothing;
        }
        // Kept: a persistent session resumes it when the client is back.
        if f.retries >= n_retry {
            return Retry::GiveUp;
        }
        f.retries += 1;
        f.sent = now;
        if let Packet::Publish(p) = &mut f.packet {
            p.dup = true;
        }
        Retry::Resend(f.packet.clone())
    }

    /// The in-flight exchange again, now, with DUP for a PUBLISH and a fresh set of retries:
    /// for a client that is back (it reconnected, or woke up).
    pub fn resume(&mut self, now: Instant) -> Option<Packet> {
        let f = self.inflight.as_mut()?;
        f.retries = 0;
        f.sent = now;
        if let Packet::Publish(p) = &mut f.packet {
            p.dup = true;
        }
        Some(f.packet.clone())
    }

    /// Message ids go on after `id` (a restored in-flight exchange holds it).
    pub fn ids_after(&mut self, id: u16) {
        self.next_id = id;
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.inflight = None;
    }
}

/// Message ids the client used recently, so a retransmitted PUBLISH is acknowledged again
/// without being published twice: QoS 2 ids until PUBREL, QoS 1 ids (DUP only) for a while.
#[derive(Debug, Default)]
pub struct Inbound {
    qos2: VecDeque<u16>,
    qos1: VecDeque<u16>,
}

const QOS2_WINDOW: usize = 32;
const QOS1_WINDOW: usize = 16;

impl Inbound {
    /// Records a QoS 2 id; false when it is already waiting for PUBREL (a duplicate).
    pub fn qos2_first(&mut self, id: u16) -> bool {
        if self.qos2.contains(&id) {
            return false;
        }
        if self.qos2.len() >= QOS2_WINDOW {
            self.qos2.pop_front();
        }
        self.qos2.push_back(id);
        true
    }

    pub fn release(&mut self, id: u16) {
        self.qos2.retain(|i| *i != id);
    }

    /// Whether this PUBLISH repeats one already accepted (what `qos1_first` / `qos2_first`
    /// would refuse), without recording anything.
    pub fn is_duplicate(&self, qos: Qos, id: u16, dup: bool) -> bool {
        match qos {
            Qos::One => dup && self.qos1.contains(&id),
            Qos::Two => self.qos2.contains(&id),
            _ => false,
        }
    }

    /// Records a QoS 1 id; false for a DUP of an id published moments ago.
    pub fn qos1_first(&mut self, id: u16, dup: bool) -> bool {
        if dup && self.qos1.contains(&id) {
            return false;
        }
        self.qos1.retain(|i| *i != id);
        if self.qos1.len() >= QOS1_WINDOW {
            self.qos1.pop_front();
        }
        self.qos1.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqttsn::codec::TopicRef;

    fn publish(id: u16) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: Qos::One,
            retain: false,
            topic: TopicRef::Id(1),
            msg_id: id,
            data: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn retries_set_dup_then_give_up() {
        let t0 = Instant::now();
        let mut o = Outbound::default();
        let Packet::Publish(p) = publish(5) else {
            unreachable!()
        };
        o.start(Wait::PubAck(p), publish(5), t0);
        let t = Duration::from_secs(1);
        assert!(matches!(o.retry(t0, t, 2), Retry::Nothing));
        for n in 1..=2 {
            match o.retry(t0 + t * n, t, 2) {
                Retry::Resend(Packet::Publish(p)) => assert!(p.dup && p.msg_id == 5),
                _ => panic!("no resend {n}"),
            }
        }
        assert!(matches!(o.retry(t0 + t * 3, t, 2), Retry::GiveUp));
        // Resumed later: resent at once with DUP, and retried afresh.
        match o.resume(t0 + t * 9) {
            Some(Packet::Publish(p)) => assert!(p.dup && p.msg_id == 5),
            _ => panic!("nothing to resume"),
        }
        assert!(matches!(o.retry(t0 + t * 10, t, 2), Retry::Resend(_)));
    }

    #[test]
    fn bounded_queue_counts_drops() {
        let mut o = Outbound::default();
        let q = |s: &'static str| Queued {
            topic: s.into(),
            payload: Bytes::new(),
            qos: Qos::Zero,
            retain: false,
        };
        assert!(!o.push(q("a"), 2));
        assert!(!o.push(q("b"), 2));
        assert!(o.push(q("c"), 2));
        assert_eq!(o.dropped, 1);
        assert_eq!(o.queue.front().unwrap().topic, "b");
    }

    #[test]
    fn duplicate_inbound_ids() {
        let mut i = Inbound::default();
        assert!(i.qos2_first(3));
        assert!(i.is_duplicate(Qos::Two, 3, true));
        assert!(!i.qos2_first(3));
        i.release(3);
        assert!(i.qos2_first(3));
        assert!(i.qos1_first(9, false));
        assert!(i.is_duplicate(Qos::One, 9, true) && !i.is_duplicate(Qos::One, 9, false));
        assert!(!i.qos1_first(9, true));
        assert!(i.qos1_first(9, false));
    }
}

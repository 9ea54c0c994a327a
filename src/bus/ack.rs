//! Acknowledgements that wait for durability: a QoS 1/2 publish from a network client that a
//! durable in-process subscription (the forward rules) takes is acknowledged once that
//! subscriber has made it durable. The router hands back a [`Commit`]; the connection keeps its
//! PUBACK/PUBREC, and every packet after it, in [`HeldAcks`] until the commit is done.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use super::codec::Packet;

/// Packets held back before the connection stops reading: a client that ignores its in-flight
/// window waits, and memory does not grow.
const MAX_HELD: usize = 1024;

/// What a publisher's acknowledgement waits for: every durable subscriber that took the message
/// has made it durable.
#[derive(Default)]
pub(crate) struct Commit(Vec<oneshot::Receiver<()>>);

impl Commit {
    pub fn push(&mut self, rx: oneshot::Receiver<()>) {
        self.0.push(rx);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True once all have fired; false if one was dropped unfired (the message may be lost).
    /// Cancel-safe: what has fired stays done.
    pub async fn wait(&mut self) -> bool {
        while let Some(rx) = self.0.last_mut() {
            if rx.await.is_err() {
                return false;
            }
            self.0.pop();
        }
        true
    }
}

/// A commit to wait for, and the packets to send once it is done (the first acknowledges the
/// publish that was committed).
struct Held {
    commit: Commit,
    packets: Vec<Packet>,
}

/// One connection's acknowledgements waiting for commits, in the order the publishes came in
/// (MQTT 3.1.1 4.6): once one waits, what follows waits behind it. Allocated only while
/// something waits, so an idle connection carries a pointer.
#[derive(Default)]
pub(crate) struct HeldAcks(Option<Box<Waiting>>);

#[derive(Default)]
struct Waiting {
    queue: VecDeque<Held>,
    packets: usize,
}

/// Why held acknowledgements were not sent.
pub(crate) struct Lost {
    /// The QoS 2 publish whose PUBREC was held: its resend must be routed again, not taken for
    /// a duplicate.
    pub qos2_pid: Option<u16>,
}

impl HeldAcks {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|w| w.queue.is_empty())
    }

    /// Whether the connection may read more input.
    pub fn has_room(&self) -> bool {
        self.0.as_ref().is_none_or(|w| w.packets < MAX_HELD)
    }

    /// The acknowledgement that comes next waits for `commit` (if there is anything to wait for).
    pub fn wait_for(&mut self, commit: Commit) {
        if !commit.is_empty() {
            self.0.get_or_insert_default().queue.push_back(Held {
                commit,
                packets: Vec::new(),
            });
        }
    }

    /// Holds `packet` behind the pending commits, or gives it back to be sent now: when nothing
    /// is pending, and always for PINGRESP (a keepalive answer must not wait for a disk).
    pub fn hold(&mut self, packet: Packet) -> Option<Packet> {
        let Some(w) = self.0.as_mut() else {
            return Some(packet);
        };
        match w.queue.back_mut() {
            Some(h) if !matches!(packet, Packet::Pingresp) => {
                h.packets.push(packet);
                w.packets += 1;
                None
            }
            _ => Some(packet),
        }
    }

    /// Resolves when the oldest commit is done (never while none is pending): the packets it
    /// held, or `Lost` if the message may not be durable.
    pub async fn next_ready(&mut self) -> Result<Vec<Packet>, Lost> {
        let Some(w) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        let Some(front) = w.queue.front_mut() else {
            return std::future::pending().await;
        };
        let committed = front.commit.wait().await;
        let held = w.queue.pop_front();
        let drained = w.queue.is_empty();
        if drained {
            self.0 = None;
        }
        let Some(held) = held else {
            return Ok(Vec::new());
        };
        if let Some(w) = self.0.as_mut() {
            w.packets -= held.packets.len();
        }
        if committed {
            return Ok(held.packets);
        }
        let qos2_pid = match held.packets.first() {
            Some(Packet::Pubrec(pid)) => Some(*pid),
            _ => None,
        };
        Err(Lost { qos2_pid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit() -> (oneshot::Sender<()>, Commit) {
        let (tx, rx) = oneshot::channel();
        let mut c = Commit::default();
        c.push(rx);
        (tx, c)
    }

    #[tokio::test]
    async fn acknowledgements_wait_in_order_and_pingresp_never_does() {
        let mut held = HeldAcks::default();
        assert_eq!(held.hold(Packet::Puback(1)), Some(Packet::Puback(1)));
        held.wait_for(Commit::default());
        assert!(held.is_empty(), "nothing to wait for");

        let (first, c1) = commit();
        held.wait_for(c1);
        assert_eq!(held.hold(Packet::Puback(2)), None);
        assert_eq!(held.hold(Packet::Pingresp), Some(Packet::Pingresp));
        assert_eq!(held.hold(Packet::Puback(3)), None);
        let (second, c2) = commit();
        held.wait_for(c2);
        assert_eq!(held.hold(Packet::Pubrec(4)), None);

        // The second commit finishing first releases nothing: order is kept.
        second.send(()).unwrap();
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), held.next_ready());
        assert!(early.await.is_err());
        first.send(()).unwrap();
        assert_eq!(
            held.next_ready().await.ok(),
            Some(vec![Packet::Puback(2), Packet::Puback(3)])
        );
        assert_eq!(held.next_ready().await.ok(), Some(vec![Packet::Pubrec(4)]));
        assert!(held.is_empty() && held.has_room());
    }

    #[tokio::test]
    async fn a_lost_message_names_its_qos2_packet_id() {
        let mut held = HeldAcks::default();
        let (lost, c) = commit();
        held.wait_for(c);
        held.hold(Packet::Pubrec(9));
        drop(lost);
        let err = held.next_ready().await.err().map(|l| l.qos2_pid);
        assert_eq!(err, Some(Some(9)));
    }
}

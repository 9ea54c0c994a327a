//! Which outbox rows are in flight on the current connection. Pure bookkeeping, no I/O.
//!
//! rumqttc assigns packet ids when a publish leaves its request queue and reports each as
//! `Outgoing::Publish(pkid)`, in request order; so the rows we hand it, in order, pair up with
//! those events one by one. Entries of `None` are our own publishes (birth, offline) that have
//! no row behind them.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
pub struct Tracker {
    /// Handed to rumqttc, packet id not yet known.
    queued: VecDeque<Option<i64>>,
    /// Sent with this packet id, not yet acknowledged.
    sent: HashMap<u16, Option<i64>>,
    /// Rows handed over and not yet acknowledged.
    rows_outstanding: usize,
}

impl Tracker {
    /// A new connection: nothing is in flight and every unacknowledged row must go again.
    pub fn reset(&mut self) {
        *self = Tracker::default();
    }

    pub fn outstanding(&self) -> usize {
        self.rows_outstanding
    }

    /// A row was handed to rumqttc.
    pub fn handed_row(&mut self, id: i64) {
        self.queued.push_back(Some(id));
        self.rows_outstanding += 1;
    }

    /// The lowest row id handed over and not yet acknowledged.
    pub fn oldest_outstanding(&self) -> Option<i64> {
        let queued = self.queued.iter().flatten();
        let sent = self.sent.values().flatten();
        queued.chain(sent).copied().min()
    }

    /// One of our own publishes (no outbox row) was handed to rumqttc.
    pub fn handed_own(&mut self) {
        self.queued.push_back(None);
    }

    /// rumqttc sent the oldest queued publish with this packet id (0 for QoS 0).
    pub fn sent(&mut self, pkid: u16) {
        if let Some(entry) = self.queued.pop_front() {
            if pkid != 0 {
                self.sent.insert(pkid, entry);
            } else if entry.is_some() {
                // Never happens at QoS 1/2; keep the count honest if it does.
                self.rows_outstanding = self.rows_outstanding.saturating_sub(1);
            }
        }
    }

    /// The broker completed delivery of `pkid` (PUBACK, or PUBCOMP at QoS 2). Returns the row to
    /// delete, if the packet carried one. `Err` for an acknowledgement of something not sent
    /// on this connection.
    pub fn acked(&mut self, pkid: u16) -> Result<Option<i64>, ()> {
        match self.sent.remove(&pkid) {
            Some(Some(id)) => {
                self.rows_outstanding = self.rows_outstanding.saturating_sub(1);
                Ok(Some(id))
            }
            Some(None) => Ok(None),
            None => Err(()),
        }
    }

    /// True while any of our own publishes (birth, offline) awaits its acknowledgement.
    pub fn own_pending(&self) -> bool {
        self.queued.iter().any(Option::is_none) || self.sent.values().any(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_pair_with_packet_ids_in_order() {
        let mut t = Tracker::default();
        t.handed_own();
        t.handed_row(10);
        t.handed_row(11);
        assert_eq!(t.outstanding(), 2);
        assert_eq!(t.oldest_outstanding(), Some(10));
        t.sent(1);
        t.sent(2);
        t.sent(3);
        assert!(t.own_pending());
        assert_eq!(t.acked(3), Ok(Some(11)));
        assert_eq!(t.acked(1), Ok(None));
        assert!(!t.own_pending());
        assert_eq!(t.acked(2), Ok(Some(10)));
        assert_eq!(t.outstanding(), 0);
        assert_eq!(
            t.acked(2),
            Err(()),
            "a second ack for the same id is unexpected"
        );
    }

    #[test]
    fn reset_forgets_everything_so_rows_are_sent_again() {
        let mut t = Tracker::default();
        t.handed_row(5);
        t.sent(1);
        t.reset();
        assert_eq!((t.oldest_outstanding(), t.outstanding()), (None, 0));
        assert_eq!(t.acked(1), Err(()));
    }

    #[test]
    fn packet_ids_reused_after_ack_map_to_new_rows() {
        let mut t = Tracker::default();
        t.handed_row(1);
        t.sent(7);
        assert_eq!(t.acked(7), Ok(Some(1)));
        t.handed_row(2);
        t.sent(7);
        assert_eq!(t.acked(7), Ok(Some(2)));
    }
}

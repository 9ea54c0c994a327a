//! Rows the uplink may still deliver: read by it (sent, or read ahead to be sent) and not yet
//! acknowledged. The caps leave them alone: a row they deleted that the uplink then delivered
//! from what it had read would count as dropped and as delivered.
//!
//! The store does not see the uplink forget what it read (a lost connection; after the next
//! CONNACK it reads again from the start), so only the `limit` most recently read are kept.

use std::collections::{BTreeMap, HashMap};

pub(super) struct Held {
    limit: usize,
    /// id -> when it was last read; and the reverse, oldest first, for eviction.
    turn_of: HashMap<i64, u64>,
    by_turn: BTreeMap<u64, i64>,
    turn: u64,
}

impl Held {
    pub(super) fn new(limit: usize) -> Held {
        Held {
            limit,
            turn_of: HashMap::new(),
            by_turn: BTreeMap::new(),
            turn: 0,
        }
    }

    /// The uplink read these rows.
    pub(super) fn read(&mut self, ids: impl IntoIterator<Item = i64>) {
        if self.limit == 0 {
            return;
        }
        for id in ids {
            self.turn += 1;
            if let Some(old) = self.turn_of.insert(id, self.turn) {
                self.by_turn.remove(&old);
            }
            self.by_turn.insert(self.turn, id);
        }
        while self.turn_of.len() > self.limit {
            let Some((_, id)) = self.by_turn.pop_first() else {
                break;
            };
            self.turn_of.remove(&id);
        }
    }

    /// Acknowledged upstream: it leaves the table with the next commit.
    pub(super) fn acked(&mut self, id: i64) {
        if let Some(turn) = self.turn_of.remove(&id) {
            self.by_turn.remove(&turn);
        }
    }

    pub(super) fn contains(&self, id: i64) -> bool {
        self.turn_of.contains_key(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.turn_of.len()
    }
}

#[cfg(test)]
#[test]
fn the_most_recently_read_are_kept_and_an_ack_releases() {
    let mut h = Held::new(3);
    h.read([1, 2, 3]);
    h.read([1]); // read again: newest now
    h.read([4]);
    assert!(!h.contains(2), "the longest unread goes first");
    assert!(h.contains(1) && h.contains(3) && h.contains(4));
    h.acked(3);
    assert_eq!(h.len(), 2);
    let mut none = Held::new(0);
    none.read([1]);
    assert!(!none.contains(1));
}

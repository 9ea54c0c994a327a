//! The retained copies of the gateway's own readings, coalesced (`buffer.retained_flush`): each
//! topic's newest copy waits in memory and is handed to the store every flush interval, and at
//! a clean stop, instead of with every commit, so a sensor's value is not rewritten on the SD
//! card at every reading. A crash loses at most one interval of them; readings refresh them.
//! Retained messages from anyone else (network and MQTT-SN clients, wills) are written through
//! as before, and a pending copy of their topic is dropped, so an older reading never
//! overwrites them.
//!
//! The pending map is locked around every write of a retained copy to the store, so the store
//! sees the copies of one topic in the order the router set them.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::*;

/// Pending copies by topic: at most one per topic, so bounded by the retained store itself.
/// `None` when coalescing is off or has stopped: copies go straight to the store.
#[derive(Default)]
pub(crate) struct Coalesced(Mutex<Option<BTreeMap<String, Message>>>);

impl Coalesced {
    fn lock(&self) -> MutexGuard<'_, Option<BTreeMap<String, Message>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Persist {
    /// From now on the gateway's own retained copies wait for [`Persist::flush_retained`].
    pub fn coalesce_retained(&self) {
        self.own.lock().get_or_insert_with(BTreeMap::new);
    }

    /// A retained message was set (or deleted) by a network or MQTT-SN client or a will:
    /// written with the next commit.
    pub fn retained(&self, msg: &Message) {
        let mut own = self.own.lock();
        if let Some(pending) = own.as_mut() {
            pending.remove(&msg.topic);
        }
        self.write_retained(msg);
    }

    /// One of the gateway's own readings was retained: its copy waits for the next flush while
    /// coalescing, replacing the one pending for its topic. A deletion is written through.
    pub fn retained_own(&self, msg: &Message) {
        let mut own = self.own.lock();
        match own.as_mut() {
            Some(pending) if !msg.payload.is_empty() => match pending.get_mut(&msg.topic) {
                Some(slot) => *slot = msg.clone(),
                None => {
                    pending.insert(msg.topic.clone(), msg.clone());
                }
            },
            Some(pending) => {
                pending.remove(&msg.topic);
                self.write_retained(msg);
            }
            None => self.write_retained(msg),
        }
    }

    /// Hands every pending copy to the store (for its next commit); returns how many.
    pub fn flush_retained(&self) -> usize {
        let mut own = self.own.lock();
        let Some(pending) = own.as_mut() else {
            return 0;
        };
        let n = pending.len();
        for msg in std::mem::take(pending).values() {
            self.write_retained(msg);
        }
        n
    }

    /// A clean stop: the pending copies go to the store, and any later one is written through.
    pub fn stop_coalescing(&self) {
        self.flush_retained();
        *self.own.lock() = None;
    }

    /// How many copies are pending (at most one per topic).
    #[cfg(test)]
    pub fn pending_retained(&self) -> usize {
        self.own.lock().as_ref().map_or(0, BTreeMap::len)
    }

    /// `$SYS` is not kept: the broker republishes it.
    fn write_retained(&self, msg: &Message) {
        if msg.topic.starts_with("$SYS/") {
            return;
        }
        if msg.payload.is_empty() {
            self.store.delete(NS_RETAINED, msg.topic.clone());
        } else {
            let value = rec::encode_message(msg, Stage::Queued);
            self.store.put(NS_RETAINED, msg.topic.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests;

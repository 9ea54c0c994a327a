//! The store keys of a persistent session's sent, unacknowledged messages, by packet id. Each
//! session queue carries one for the persistence to fill; here so that the queue and the
//! persistence both import it and not each other.

use std::sync::{Mutex, MutexGuard};

/// A sent message's store key and where its acknowledgement stands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub key: u64,
    pub qos: u8,
    pub released: bool,
}

/// The store keys of a session's sent, unacknowledged messages, by packet id.
#[derive(Default)]
pub(crate) struct SentKeys(Mutex<PidMap>);

impl SentKeys {
    pub(crate) fn lock(&self) -> MutexGuard<'_, PidMap> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A map by packet id as a plain list: it holds at most the in-flight window, and every session
/// queue carries one, empty and unallocated unless the session is persistent.
#[derive(Default)]
pub(crate) struct PidMap(pub Vec<(u16, Sent)>);

impl PidMap {
    pub(crate) fn get_mut(&mut self, pid: &u16) -> Option<&mut Sent> {
        self.0.iter_mut().find(|(p, _)| p == pid).map(|(_, s)| s)
    }

    pub(crate) fn insert(&mut self, pid: u16, sent: Sent) {
        match self.get_mut(&pid) {
            Some(s) => *s = sent,
            None => self.0.push((pid, sent)),
        }
    }

    pub(crate) fn remove(&mut self, pid: &u16) -> Option<Sent> {
        let i = self.0.iter().position(|(p, _)| p == pid)?;
        Some(self.0.swap_remove(i).1)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Sent> {
        self.0.iter().map(|(_, s)| s)
    }

    pub(crate) fn into_values(self) -> impl Iterator<Item = Sent> {
        self.0.into_iter().map(|(_, s)| s)
    }
}

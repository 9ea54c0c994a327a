//! Small durable state beside the outbox: the local broker's sessions and retained values, the
//! MQTT-SN gateway's clients and registrations. Keyed by (namespace, key), values are opaque bytes
//! in the owner's own encoding.
//!
//! Writes ride on the outbox's commits (same interval, same `synchronous=FULL`), so state costs no
//! extra fsync, and a put followed by a delete of the same key before the commit writes nothing.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rusqlite::{params, Transaction};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use super::{Cmd, Store, StoreError};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS state (
         ns TEXT NOT NULL,
         key TEXT NOT NULL,
         value BLOB NOT NULL,
         PRIMARY KEY (ns, key)
     ) WITHOUT ROWID;";

/// Changes waiting for the next commit: the newest value per key, or `None` for a deletion.
/// (key, value) pairs of one namespace, sorted by key.
pub type Entries = Vec<(String, Vec<u8>)>;

/// A change waiting for the next commit.
#[derive(Debug, Clone)]
pub(super) enum Change {
    Put(Vec<u8>),
    /// A put of a key the writer says was never written before: deleting it before the commit
    /// drops the change altogether (a queue entry consumed within one commit interval).
    PutNew(Vec<u8>),
    Delete,
}

impl Change {
    fn value(&self) -> Option<&Vec<u8>> {
        match self {
            Change::Put(v) | Change::PutNew(v) => Some(v),
            Change::Delete => None,
        }
    }
}

/// Keyed by (namespace, key); namespaces are mostly constants, so borrowed.
pub(super) type Pending = BTreeMap<(Cow<'static, str>, String), Change>;

pub(super) fn apply(tx: &Transaction<'_>, pending: &Pending) -> rusqlite::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut put = tx.prepare_cached(
        "INSERT INTO state (ns, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value",
    )?;
    let mut del = tx.prepare_cached("DELETE FROM state WHERE ns = ?1 AND key = ?2")?;
    for ((ns, key), change) in pending {
        match change.value() {
            Some(v) => put.execute(params![ns.as_ref(), key, v])?,
            None => del.execute(params![ns.as_ref(), key])?,
        };
    }
    Ok(())
}

/// Every committed entry of `ns`, with `pending` laid over it, so a reader sees its own writes.
pub(super) fn load(
    conn: &rusqlite::Connection,
    ns: &str,
    pending: &Pending,
) -> rusqlite::Result<Entries> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM state WHERE ns = ?1")?;
    let mut all: BTreeMap<String, Vec<u8>> = stmt
        .query_map([ns], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for ((pns, key), change) in pending {
        if pns.as_ref() == ns {
            match change.value() {
                Some(v) => all.insert(key.clone(), v.clone()),
                None => all.remove(key),
            };
        }
    }
    Ok(all.into_iter().collect())
}

/// Changes shared between the handles that make them and the writer that commits them. Sync and
/// never blocking, so a broker's router can record state without awaiting; bounded by the number
/// of distinct keys, because a newer change to a key replaces the older one.
#[derive(Default)]
pub(super) struct Shared {
    pending: Mutex<Pending>,
    changed: Notify,
}

impl Shared {
    fn set(&self, ns: Cow<'static, str>, key: String, change: Change) {
        if let Ok(mut p) = self.pending.lock() {
            let k = (ns, key);
            match change {
                Change::Delete => {
                    if let Some(Change::PutNew(_)) = p.get(&k) {
                        p.remove(&k);
                        return;
                    }
                    p.insert(k, Change::Delete);
                }
                // Still never committed: stays droppable.
                Change::Put(v) if matches!(p.get(&k), Some(Change::PutNew(_))) => {
                    p.insert(k, Change::PutNew(v));
                }
                change => {
                    p.insert(k, change);
                }
            }
        }
        self.changed.notify_one();
    }

    /// Takes everything pending, for one commit.
    pub(super) fn take(&self) -> Pending {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    /// Puts back what a failed commit took; changes made since then win.
    pub(super) fn restore(&self, mut taken: Pending) {
        if let Ok(mut p) = self.pending.lock() {
            taken.append(&mut p);
            *p = taken;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.lock().map(|p| p.is_empty()).unwrap_or(true)
    }

    pub(super) fn snapshot(&self) -> Pending {
        self.pending.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub(super) async fn changed(&self) {
        self.changed.notified().await
    }
}

/// [`Store::state_put`] and [`Store::state_delete`] for a holder that must not keep the store
/// open (the writer thread ends once every [`Store`] handle is gone). Changes made after the
/// store closed are not written.
#[derive(Clone)]
pub struct StateWriter(Arc<Shared>);

impl StateWriter {
    pub fn put(&self, ns: &'static str, key: String, value: Vec<u8>) {
        self.0.set(Cow::Borrowed(ns), key, Change::Put(value));
    }

    /// [`StateWriter::put`] of a key that has never been written before (the caller knows,
    /// e.g. from a sequence number): a delete before the next commit then costs nothing.
    pub fn put_new(&self, ns: &'static str, key: String, value: Vec<u8>) {
        self.0.set(Cow::Borrowed(ns), key, Change::PutNew(value));
    }

    pub fn delete(&self, ns: &'static str, key: String) {
        self.0.set(Cow::Borrowed(ns), key, Change::Delete);
    }
}

impl Store {
    pub fn state_writer(&self) -> StateWriter {
        StateWriter(self.state.clone())
    }

    /// Stores `value` under (`ns`, `key`), replacing what was there, with the next commit.
    pub fn state_put(&self, ns: &str, key: &str, value: Vec<u8>) {
        let ns = Cow::Owned(ns.to_owned());
        self.state.set(ns, key.to_owned(), Change::Put(value));
    }

    /// Removes (`ns`, `key`) with the next commit; removing a missing key is not an error.
    pub fn state_delete(&self, ns: &str, key: &str) {
        let ns = Cow::Owned(ns.to_owned());
        self.state.set(ns, key.to_owned(), Change::Delete);
    }

    /// Every entry of `ns`, including changes not yet committed, sorted by key.
    pub async fn state_load(&self, ns: &str) -> Result<Entries, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::StateLoad {
            ns: ns.to_owned(),
            reply,
        })
        .await?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }
}

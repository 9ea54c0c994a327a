//! The one owner of SQLite: the outbox (store-and-forward queue), the sequence counter and the
//! durable state of the local broker and the MQTT-SN gateway (`state.rs`).
//!
//! A dedicated thread owns the connection. Writes are collected and committed together once per
//! `commit_interval` (WAL, `synchronous=FULL`), so a power cut can take at most one interval of
//! readings, and the SD card sees one fsync per interval instead of one per reading.
//!
//! Write-behind: a message gets its row id when it is handed over, and the uplink reads it at
//! once, from the batch waiting for the next commit (`pending`) or from the database. If
//! upstream acknowledges it before that commit, it leaves the batch and is never written; only
//! what is still unacknowledged at commit time is. A power cut or `kill -9` therefore loses at
//! most what was neither acknowledged upstream nor committed: one commit interval at most.

mod checkpoint;
mod compact;
pub mod config;
mod db;
mod full;
mod held;
pub mod inspect;
mod meta;
mod pending;
mod schema;
mod state;
mod writer;

pub use config::BufferConfig;
#[cfg(test)]
use full::shed_oldest_telemetry;
pub use full::DROP_MEMORY_FULL;
use full::{DropReport, MEMORY_CAP};
#[cfg(test)]
use pending::Queued;
use writer::{Unwritten, Writer, RESERVE_BLOCK};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

pub use db::{
    Caps, Row, RunStats, Stats, DROP_MAX_AGE, DROP_MAX_BYTES, DROP_MAX_ROWS, UPLINK_READ_AHEAD,
};
pub use state::{Entries, StateWriter};

/// Messages dropped since the buffer was created, by (reason, device).
pub type DropTotals = std::collections::BTreeMap<(String, String), u64>;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "edgegate.db";

/// Commands queued to the writer thread. The bound is what gives producers backpressure.
const QUEUE: usize = 8192;
/// A batch is committed early once it holds this many changes, so memory stays bounded.
const MAX_BATCH: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open buffer database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("buffer database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("buffer database writer has stopped")]
    Closed,
    #[error("no buffer at {0} (has the gateway run with this config's buffer.dir, from this working directory?)")]
    Missing(PathBuf),
    #[error("{0}")]
    Io(std::io::Error),
    #[error(
        "stopped with {readings} readings and {alarms} alarms that the buffer database could not \
         take (lost), and {uncounted_drops} memory_full drops not counted in it"
    )]
    Unwritten {
        readings: usize,
        alarms: usize,
        uncounted_drops: u64,
    },
}

pub use crate::reading::Class;

/// A message to keep until the upstream broker acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub class: Class,
    /// The device it came from ("" when unknown), for counting drops per device.
    pub device: String,
    /// A reading's fields, which the outbox writes instead of the payload they render to.
    pub sample: Option<crate::reading::payload::Sample>,
}

/// Fired once the commit that took the message it came with has succeeded.
pub type Committed = oneshot::Sender<()>;

/// Counts since the store was opened: what the card was spared, and what it took.
#[derive(Debug, Default)]
pub struct Counters {
    /// Unix milliseconds when the store was opened.
    pub since_ms: i64,
    /// Messages written to the database.
    pub written: AtomicU64,
    /// Messages acknowledged upstream before their commit: never written.
    pub elided: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> WriteStats {
        WriteStats {
            written: Counters::get(&self.written),
            elided: Counters::get(&self.elided),
            commits: Counters::get(&self.commits),
        }
    }
}

/// Bytes this process has caused to be written to storage (`write_bytes` in /proc/self/io),
/// where the kernel tells.
pub fn disk_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    pub written: u64,
    pub elided: u64,
    pub commits: u64,
}

enum Cmd {
    Enqueue(Outgoing, Option<Committed>),
    /// The sequence counter neared its reservation.
    Reserve,
    Ack(Vec<i64>),
    Fetch {
        after: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Row>, rusqlite::Error>>,
    },
    Range {
        after: i64,
        upto: i64,
        class: Option<Class>,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Row>, rusqlite::Error>>,
    },
    Stats(oneshot::Sender<Result<Stats, rusqlite::Error>>),
    Flush(oneshot::Sender<()>),
    Ping(oneshot::Sender<()>),
    StateLoad {
        ns: String,
        reply: oneshot::Sender<rusqlite::Result<state::Entries>>,
    },
}

/// Handle to the outbox. Cheap to clone; the writer thread ends when the last handle is closed.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    seq: Arc<AtomicU64>,
    /// The durable bound of `seq` (see [`Store::next_seq`]).
    seq_bound: Arc<AtomicU64>,
    first_seq: u64,
    committed: watch::Receiver<i64>,
    available: watch::Receiver<i64>,
    acks_committed: watch::Receiver<u64>,
    counters: Arc<Counters>,
    thread: Arc<Mutex<Option<JoinHandle<Unwritten>>>>,
    path: PathBuf,
    healthy: watch::Receiver<bool>,
    drops: watch::Receiver<DropTotals>,
    state: Arc<state::Shared>,
    /// The last commit before this opening: see [`Store::previous_commit`].
    previous_commit: Option<std::time::SystemTime>,
}

impl Store {
    /// Opens (creating if needed) the database in `dir` and starts the writer thread.
    pub fn open(dir: &Path, commit_interval: Duration, caps: Caps) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let (db, recovered) = match db::Db::open(&path) {
            Ok(db) => (db, false),
            Err(e) if is_corrupt(&e) => {
                let aside = move_aside(&path).map_err(|source| StoreError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
                tracing::error!(
                    "buffer database {} is damaged ({e}); moved it aside to {} and started a new one",
                    path.display(),
                    aside.display()
                );
                let db = db::Db::open(&path).map_err(|source| StoreError::Open {
                    path: path.clone(),
                    source,
                })?;
                (db, true)
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: path.clone(),
                    source,
                })
            }
        };
        let mut db = db;
        let checkpoints = db.checkpoint_elsewhere()?;
        let checkpoint_path = path.clone();
        std::thread::Builder::new()
            .name("edgegate-checkpoint".into())
            .spawn(move || checkpoint::run(&checkpoint_path, checkpoints))
            .map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        let previous_commit = db
            .last_commit_ms()?
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
        let mut next_seq = db.next_seq()?;
        if recovered {
            // The old counter is lost with the file; jump past any number it could have used
            // so upstream never takes a new reading for a duplicate of an old one.
            next_seq = next_seq.max(seq_floor_after_loss());
        }
        // A new run starts at the reservation: whatever the last one handed out lies below it.
        // The first block of this run is on disk before any of it is handed out.
        let durable = db::Reserved {
            next_id: db.next_id() + RESERVE_BLOCK as i64,
            next_seq: next_seq + RESERVE_BLOCK,
        };
        let since_ms = db::now_ms();
        db.commit(
            std::iter::empty(),
            &[],
            Some((
                durable,
                &RunStats {
                    since_ms,
                    ..RunStats::default()
                },
            )),
            (&caps, &held::Held::new(0)),
            &db::Drops::new(),
            &state::Pending::default(),
        )?;
        let next_id = db.next_id();
        let seq = Arc::new(AtomicU64::new(next_seq));
        let seq_bound = Arc::new(AtomicU64::new(durable.next_seq));
        let max_id = db.max_id()?;
        let (committed_tx, committed) = watch::channel(max_id);
        let (available_tx, available) = watch::channel(max_id.max(next_id - 1));
        let counters = Arc::new(Counters {
            since_ms,
            ..Counters::default()
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (acks_tx, acks_committed) = watch::channel(0);
        let (healthy_tx, healthy) = watch::channel(true);
        let (drops_tx, drops) = watch::channel(db.drop_totals()?);
        let shared_state = Arc::new(state::Shared::default());
        let writer = Writer {
            state: shared_state.clone(),
            db,
            rx,
            seq: seq.clone(),
            committed: committed_tx,
            available: available_tx,
            acks_committed: acks_tx,
            acks_seen: 0,
            next_id,
            durable,
            reserve: durable,
            seq_bound: seq_bound.clone(),
            counters: counters.clone(),
            last_meta: std::time::Instant::now(),
            qos2: std::collections::BTreeSet::new(),
            last_ack: None,
            meta_due: false,
            interval: commit_interval,
            caps,
            drop_report: DropReport::default(),
            memory_drops: db::Drops::new(),
            healthy: healthy_tx,
            drop_totals: drops_tx,
            path: path.clone(),
            waiters: Vec::new(),
            batch: MEMORY_CAP,
            failing: false,
            held: held::Held::new(caps.held),
        };
        let thread = std::thread::Builder::new()
            .name("edgegate-store".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(Store {
            tx,
            seq,
            seq_bound,
            first_seq: next_seq,
            committed,
            available,
            acks_committed,
            counters,
            thread: Arc::new(Mutex::new(Some(thread))),
            path,
            healthy,
            drops,
            state: shared_state,
            previous_commit,
        })
    }

    /// Wall-clock time of the last commit before the file was opened: after a crash, the
    /// latest moment the crashed run is known to have been alive (it commits every
    /// `commit_interval` while anything changes). `None` for a new file, or one written by a
    /// version that did not record it.
    pub fn previous_commit(&self) -> Option<std::time::SystemTime> {
        self.previous_commit
    }

    async fn send(&self, cmd: Cmd) -> Result<(), StoreError> {
        self.tx.send(cmd).await.map_err(|_| StoreError::Closed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next per-gateway sequence number: strictly increasing across restarts and crashes,
    /// never reused. The database reserves them a block at a time, raised by the writer once
    /// half of it is used; a new run starts at the reservation, so it may skip forward.
    pub fn next_seq(&self) -> u64 {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        if n + RESERVE_BLOCK / 2 >= self.seq_bound.load(Ordering::Relaxed) {
            // A full queue means the writer is busy and will look at the counter anyway.
            let _ = self.tx.try_send(Cmd::Reserve);
        }
        n
    }

    /// The first sequence number of this run (the birth message announces it).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// What the database was written and spared since the store was opened.
    pub fn write_stats(&self) -> WriteStats {
        self.counters.snapshot()
    }

    /// The live counters behind [`Store::write_stats`], for `/metrics` (which must not hold a
    /// `Store`: that would keep the writer thread alive).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Queues a message for the next commit. Waits while the writer is behind (backpressure).
    pub async fn enqueue(&self, msg: Outgoing) -> Result<(), StoreError> {
        self.enqueue_then(msg, None).await
    }

    /// [`Store::enqueue`], and `committed` fires once the transaction that took the message is
    /// on disk. While the database cannot be written (the memory fallback) it waits for the
    /// first commit that succeeds again; a message the memory cap sheds meanwhile fires with that
    /// commit too, which also records its drop. It is dropped unfired if the writer stops first.
    pub async fn enqueue_then(
        &self,
        msg: Outgoing,
        committed: Option<Committed>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Cmd::Enqueue(msg, committed))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// The upstream broker acknowledged row `id`: delete it with the next commit.
    pub async fn ack(&self, id: i64) -> Result<(), StoreError> {
        self.ack_many(vec![id]).await
    }

    /// [`Store::ack`] for several rows at once, in the order they were acknowledged.
    pub async fn ack_many(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.tx
            .send(Cmd::Ack(ids))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Committed rows with `id > after`, oldest first.
    pub async fn fetch_after(&self, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Fetch {
                after,
                limit,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    /// Rows with `after < id <= upto`, of `class` if given, oldest first: committed or still
    /// waiting for their commit (up to [`Store::available`]).
    pub async fn fetch_range(
        &self,
        after: i64,
        upto: i64,
        class: Option<Class>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Range {
            after,
            upto,
            class,
            limit,
            reply,
        };
        self.tx.send(cmd).await.map_err(|_| StoreError::Closed)?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Stats(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    /// Commits everything queued so far; returns once it is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Answered by the writer thread without committing: whether it still serves its queue.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Ping(reply)).await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// False while the database cannot be written (disk full, read-only); messages are then held
    /// in memory, bounded.
    pub fn healthy(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// Drop totals by (reason, device); changes whenever a cap or the memory queue drops.
    pub fn drops(&self) -> watch::Receiver<DropTotals> {
        self.drops.clone()
    }

    /// The highest row id committed so far; changes after every commit that inserted rows.
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// The highest row id handed out, written or not: what [`Store::fetch_range`] can read up
    /// to. Changes with every message handed over.
    pub fn available(&self) -> watch::Receiver<i64> {
        self.available.clone()
    }

    /// How many of this handle's family's `ack`s are settled (the rows are gone: never
    /// written, or their deletion committed), counted in the order they were sent. Until then
    /// a row that was acknowledged can still be read back.
    pub fn acks_committed(&self) -> watch::Receiver<u64> {
        self.acks_committed.clone()
    }

    /// Commits what is queued and stops the writer thread once every other handle is dropped.
    pub async fn close(self) {
        let _ = self.finish().await;
    }

    /// [`Store::close`], and an error naming what the database could not take by then (the
    /// writer has logged it too): those messages are lost.
    pub async fn finish(self) -> Result<(), StoreError> {
        let _ = self.flush().await;
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        drop(self.tx);
        let Some(t) = thread else { return Ok(()) };
        match tokio::task::spawn_blocking(move || t.join()).await {
            Ok(Ok(lost)) if lost != Unwritten::default() => Err(StoreError::Unwritten {
                readings: lost.readings,
                alarms: lost.alarms,
                uncounted_drops: lost.uncounted_drops,
            }),
            _ => Ok(()),
        }
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == DatabaseCorrupt || f.code == NotADatabase)
}

/// Renames the database and its WAL files to `<name>.corrupt-<UTC time>`; never deletes them.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let aside = path.with_file_name(format!("{DB_FILE}.corrupt-{stamp}"));
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let from = path.with_file_name(format!("{DB_FILE}{suffix}"));
        if from.exists() {
            std::fs::rename(
                &from,
                aside.with_file_name(format!("{DB_FILE}.corrupt-{stamp}{suffix}")),
            )?;
        }
    }
    Ok(aside)
}

/// A sequence number above any a gateway can have reached by counting: Unix milliseconds x 1000.
fn seq_floor_after_loss() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64 * 1000)
        .unwrap_or(0)
}

#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_behind_tests;

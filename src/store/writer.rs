//! The writer thread: the one place that holds the database connection for writing. It batches
//! inserts, acknowledgements and state changes into one transaction per commit interval, and
//! holds them in memory, bounded, while the disk refuses them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::full::{fitting, free_bytes, shed_oldest_telemetry, DropReport, MEMORY_CAP};
use super::pending::{self, Batch, Queued};
use super::{db, state, Caps, Class, Cmd, Counters, DropTotals, MAX_BATCH};

pub(super) struct Writer {
    pub(super) db: db::Db,
    pub(super) rx: mpsc::Receiver<Cmd>,
    pub(super) seq: Arc<AtomicU64>,
    /// The highest row id written.
    pub(super) committed: watch::Sender<i64>,
    /// The highest row id handed out: the uplink may read up to it, written or not.
    pub(super) available: watch::Sender<i64>,
    /// How many acknowledged rows are gone for good (never written, or their deletion
    /// committed), counted in the order of their `Ack`s: always a prefix of them.
    pub(super) acks_committed: watch::Sender<u64>,
    pub(super) acks_seen: u64,
    pub(super) next_id: i64,
    /// What the database holds, and what the next commit is to write.
    pub(super) durable: db::Reserved,
    pub(super) reserve: db::Reserved,
    /// The sequence counter's durable bound, for [`super::Store::next_seq`]'s nudge.
    pub(super) seq_bound: Arc<AtomicU64>,
    pub(super) counters: Arc<Counters>,
    /// QoS 2 messages waiting in the batch. They are written before the uplink may read them:
    /// a broker that keeps a QoS 2 id until PUBREL would take a later message with the same id
    /// (one of a crashed run's unwritten ones, for example) for a duplicate; written, the same
    /// message comes back with the same id instead. So readable ends before the first of them,
    /// and each one asks for a commit at once.
    pub(super) qos2: std::collections::BTreeSet<i64>,
    /// When upstream last acknowledged something.
    pub(super) last_ack: Option<std::time::Instant>,
    /// When `meta` (reservation, last commit time, counters) was last written.
    pub(super) last_meta: std::time::Instant,
    /// The next commit is due even if it writes no message (reservation, alive).
    pub(super) meta_due: bool,
    pub(super) interval: Duration,
    pub(super) caps: Caps,
    pub(super) drop_report: DropReport,
    /// Drops while the database could not be written, counted into it once it can be.
    pub(super) memory_drops: db::Drops,
    pub(super) healthy: watch::Sender<bool>,
    pub(super) drop_totals: watch::Sender<DropTotals>,
    pub(super) path: PathBuf,
    pub(super) state: Arc<state::Shared>,
    /// Fired by the next commit that succeeds (see [`super::Store::enqueue_then`]): those of
    /// messages shed from memory, whose drop that commit records.
    pub(super) waiters: Vec<super::Committed>,
    /// Messages per transaction: halved when one fails, doubled when one succeeds.
    pub(super) batch: usize,
    /// The last commit failed: messages wait in memory.
    pub(super) failing: bool,
    pub(super) held: super::held::Held,
}

/// Ids and sequence numbers are reserved this many at a time.
pub(super) const RESERVE_BLOCK: u64 = 1 << 16;

/// Even with nothing to write, a commit at least this often records that the gateway was alive
/// (`last_commit_ms`: after a crash, session expiry counts from it).
const ALIVE_EVERY: Duration = Duration::from_secs(90);
/// A commit that happens anyway writes `meta` too once it is this old, so that on a site whose
/// retained values are flushed every minute the alive commit never needs a commit of its own.
const META_EVERY: Duration = Duration::from_secs(30);

/// While the database is failing, a transaction takes at most this many messages: the WAL then
/// grows in small steps that a checkpoint can move into the pages the uplink's acknowledgements
/// free, instead of taking all the space that came back at once.
const RECOVERY_BATCH: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
enum Commit {
    /// Everything queued is written.
    Done,
    /// A batch is written, more wait.
    Partial,
    /// Nothing could be written.
    Failed,
}

/// What the writer could not put on disk before it stopped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Unwritten {
    pub(super) readings: usize,
    pub(super) alarms: usize,
    /// `memory_full` drops that are not counted in the file.
    pub(super) uncounted_drops: u64,
}

impl Writer {
    pub(super) fn run(mut self) -> Unwritten {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("buffer writer cannot start: {e}");
                return Unwritten::default();
            }
        };
        rt.block_on(self.serve())
    }

    async fn serve(&mut self) -> Unwritten {
        let mut inserts: Batch = Vec::new();
        let mut deletes: Vec<i64> = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let cmd = match deadline {
                Some(d) => tokio::select! {
                    c = self.rx.recv() => c,
                    _ = tokio::time::sleep_until(d) => {
                        let now = tokio::time::Instant::now();
                        deadline = match self.commit_due(&mut inserts, &mut deletes) {
                            // The young ones get their own interval.
                            Commit::Done => inserts
                                .first()
                                .map(|q| tokio::time::Instant::from_std(q.at) + self.interval),
                            // Acks and reads get their turn between two batches.
                            Commit::Partial => Some(now),
                            Commit::Failed => Some(now + self.interval),
                        };
                        continue;
                    }
                },
                None => {
                    let alive = tokio::time::Instant::from_std(self.last_meta + ALIVE_EVERY);
                    tokio::select! {
                        c = self.rx.recv() => c,
                        _ = self.state.changed() => {
                            deadline = Some(tokio::time::Instant::now() + self.interval);
                            continue;
                        }
                        _ = tokio::time::sleep_until(alive) => {
                            self.write_meta(&mut inserts, &mut deletes);
                            continue;
                        }
                    }
                }
            };
            let Some(cmd) = cmd else { break };
            match cmd {
                Cmd::Enqueue(msg, committed) => {
                    if self.next_id >= self.durable.next_id {
                        // Never hand out an id the database does not reserve: after a crash a
                        // new run would give it to another message.
                        self.reserve.next_id = self.next_id + RESERVE_BLOCK as i64;
                        self.write_meta(&mut inserts, &mut deletes);
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    if msg.qos >= 2 {
                        self.qos2.insert(id);
                        deadline = Some(tokio::time::Instant::now());
                    }
                    inserts.push(Queued {
                        id,
                        created_ms: db::now_ms(),
                        at: std::time::Instant::now(),
                        msg,
                        committed,
                    });
                    self.publish_available();
                    if self.reserve_ahead() {
                        self.meta_due = true;
                        deadline = Some(tokio::time::Instant::now());
                    }
                }
                Cmd::Reserve => {
                    if self.reserve_ahead() {
                        self.meta_due = true;
                        deadline = Some(tokio::time::Instant::now());
                    }
                }
                Cmd::Ack(ids) => self.acked(ids, &mut inserts, &mut deletes),
                Cmd::Fetch {
                    after,
                    limit,
                    reply,
                } => {
                    let rows = self.db.fetch_after(after, limit);
                    self.read(&rows);
                    let _ = reply.send(rows);
                }
                Cmd::Range {
                    after,
                    upto,
                    class,
                    limit,
                    reply,
                } => {
                    let rows = self.range(&inserts, after, upto, class, limit);
                    self.read(&rows);
                    let _ = reply.send(rows);
                }
                Cmd::Stats(reply) => {
                    let _ = reply.send(self.db.stats());
                }
                Cmd::StateLoad { ns, reply } => {
                    let pending = self.state.snapshot();
                    let _ = reply.send(state::load(self.db.conn(), &ns, &pending));
                }
                Cmd::Ping(reply) => {
                    let _ = reply.send(());
                }
                Cmd::Flush(reply) => {
                    // Rare (a stop, a test): a flush that commits something records the time
                    // and the counters too; one with nothing to write is no commit, and leaves
                    // the time of the last one as it is (session expiry counts from it).
                    if !(inserts.is_empty() && deletes.is_empty() && self.state.is_empty()) {
                        self.meta_due = true;
                    }
                    self.commit_all(&mut inserts, &mut deletes);
                    deadline = None;
                    let _ = reply.send(());
                }
            }
            if inserts.len() + deletes.len() >= MAX_BATCH && !self.failing {
                self.commit(&mut inserts, &mut deletes);
            }
            if deadline.is_none() && !(inserts.is_empty() && deletes.is_empty()) {
                deadline = Some(tokio::time::Instant::now() + self.interval);
            }
        }
        if self.commit_all(&mut inserts, &mut deletes) {
            return Unwritten::default();
        }
        let alarms = inserts
            .iter()
            .filter(|q| q.msg.class == Class::Alarm)
            .count();
        let lost = Unwritten {
            readings: inserts.len() - alarms,
            alarms,
            uncounted_drops: self.memory_drops.values().sum(),
        };
        tracing::error!(
            "stopping with the buffer database {} still not writable: {} readings and {} alarms \
             held in memory are lost, and {} messages dropped meanwhile (memory_full) are not \
             counted in it",
            self.path.display(),
            lost.readings,
            lost.alarms,
            lost.uncounted_drops
        );
        lost
    }

    /// Rows with `after < id <= upto` of `class`, written or still in `inserts`, oldest first.
    fn range(
        &self,
        inserts: &Batch,
        after: i64,
        upto: i64,
        class: Option<Class>,
        limit: usize,
    ) -> rusqlite::Result<Vec<db::Row>> {
        let written = *self.committed.borrow();
        let from_db = match after < written {
            true => self
                .db
                .fetch_range(after, upto.min(written), class, limit)?,
            false => Vec::new(),
        };
        let held = pending::range(inserts, after, upto, class, limit);
        Ok(pending::merge(from_db, held, limit))
    }

    /// Upstream acknowledged these rows: one still waiting for its commit leaves the batch (it
    /// is never written, and whoever waits for its commit is told now); a written one is
    /// deleted with the next commit.
    fn acked(&mut self, ids: Vec<i64>, inserts: &mut Batch, deletes: &mut Vec<i64>) {
        self.last_ack = Some(std::time::Instant::now());
        for id in ids {
            self.acks_seen += 1;
            self.held.acked(id);
            match pending::take(inserts, id) {
                Some(q) => {
                    Counters::add(&self.counters.elided, 1);
                    if let Some(w) = q.committed {
                        let _ = w.send(());
                    }
                }
                None => deletes.push(id),
            }
        }
        if deletes.is_empty() {
            self.acks_committed.send_replace(self.acks_seen);
        }
    }

    /// Raises the reservation of sequence numbers (and ids) once half of it is used; true when a
    /// commit should write it soon.
    fn reserve_ahead(&mut self) -> bool {
        let half = RESERVE_BLOCK / 2;
        let seq = self.seq.load(Ordering::Relaxed);
        let mut due = false;
        if seq + half >= self.durable.next_seq {
            self.reserve.next_seq = self.reserve.next_seq.max(seq + RESERVE_BLOCK);
            due = true;
        }
        if (self.next_id as u64) + half >= self.durable.next_id as u64 {
            self.reserve.next_id = self
                .reserve
                .next_id
                .max(self.next_id + RESERVE_BLOCK as i64);
            due = true;
        }
        due && self.reserve != self.durable
    }

    /// A commit now even if nothing else waits: for the reservation, or to record being alive.
    fn write_meta(&mut self, inserts: &mut Batch, deletes: &mut Vec<i64>) {
        self.meta_due = true;
        self.commit(inserts, deletes);
    }

    /// The commit interval's commit. While upstream acknowledges (an ack within the last two
    /// intervals), the messages of the last half interval wait for their own deadline, so that
    /// one upstream is about to acknowledge is not written for arriving just before the timer
    /// fired; with no acknowledgements coming (an outage) everything waiting is written, and
    /// commits stay an interval apart. Either way each message is written at most one interval
    /// after it was handed over.
    fn commit_due(&mut self, inserts: &mut Batch, deletes: &mut Vec<i64>) -> Commit {
        let now = std::time::Instant::now();
        let acking = self
            .last_ack
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval * 2);
        let young = if acking {
            self.interval / 2
        } else {
            Duration::ZERO
        };
        let cutoff = now.checked_sub(young).unwrap_or(now);
        // Handed over in id order, so their times rise with the ids. A QoS 2 message is written
        // however young, and so is everything before it.
        let old = inserts.partition_point(|q| q.at <= cutoff);
        let old = match self.qos2.last() {
            Some(&last) => old.max(inserts.partition_point(|q| q.id <= last)),
            None => old,
        };
        let young = inserts.split_off(old);
        let done = self.commit(inserts, deletes);
        inserts.extend(young);
        done
    }

    /// [`Writer::commit`] until all is written (true) or nothing more can be.
    fn commit_all(&mut self, inserts: &mut Batch, deletes: &mut Vec<i64>) -> bool {
        loop {
            match self.commit(inserts, deletes) {
                Commit::Done => return true,
                Commit::Partial => {}
                Commit::Failed => return false,
            }
        }
    }

    /// Writes what is queued, in one transaction while the disk takes it. When one fails (the
    /// disk is full), the next try takes half as many messages, down to one, alarms first, and
    /// then the acknowledgements alone (deleting frees room). While the database is failing,
    /// each call writes one batch, and each success doubles it again up to `RECOVERY_BATCH`.
    /// What is left stays queued in memory, bounded by `MEMORY_CAP` (the oldest telemetry goes
    /// first, counted as `memory_full`), for the next try.
    fn commit(&mut self, inserts: &mut Batch, deletes: &mut Vec<i64>) -> Commit {
        let done = self.try_commit(inserts, deletes);
        // Writing alarms first reorders the batch; the uplink reads it by id.
        if !inserts.is_sorted_by_key(|q| q.id) {
            inserts.sort_by_key(|q| q.id);
        }
        if !self.qos2.is_empty() {
            self.qos2
                .retain(|id| inserts.binary_search_by_key(id, |q| q.id).is_ok());
            self.publish_available();
        }
        done
    }

    /// What the uplink may read up to: every id handed out, but not a QoS 2 message still
    /// waiting for its commit, nor anything after it.
    fn publish_available(&self) {
        let upto = self
            .qos2
            .first()
            .map_or(self.next_id - 1, |first| first - 1);
        self.available.send_if_modified(|v| {
            let moved = *v < upto;
            *v = (*v).max(upto);
            moved
        });
    }

    fn try_commit(&mut self, inserts: &mut Batch, deletes: &mut Vec<i64>) -> Commit {
        if inserts.is_empty()
            && deletes.is_empty()
            && self.state.is_empty()
            && self.waiters.is_empty()
            && !self.meta_due
            // While failing, each interval tries a commit, so recovery shows even when the
            // uplink took everything that waited.
            && !self.failing
        {
            return Commit::Done;
        }
        let mut alarms_first = false;
        let mut acks_only = None;
        loop {
            // Sized to the room left, so that a full disk never takes the last of it.
            let n = match acks_only {
                Some(_) => 0,
                None => fitting(inserts, self.batch, self.room()),
            };
            if n == 0 && !inserts.is_empty() && acks_only.is_none() {
                // Not even one message fits: the acknowledgements alone, which free room (and the
                // drop counts and state changes, which are small).
                if self.has_small_changes(deletes) {
                    let e = rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                        None,
                    );
                    acks_only = Some(e);
                    continue;
                }
                let _ = self.db.checkpoint();
                self.hold(inserts, None);
                return Commit::Failed;
            }
            if n < inserts.len() && !alarms_first {
                // Stable: per class, messages keep their order.
                inserts.sort_by_key(|q| q.msg.class != Class::Alarm);
                alarms_first = true;
            }
            let state = self.state.take();
            let c = &self.counters;
            let run = db::RunStats {
                since_ms: c.since_ms,
                last_commit_ms: 0,
                written: Counters::get(&c.written) + n as u64,
                elided: Counters::get(&c.elided),
                commits: Counters::get(&c.commits) + 1,
                disk_bytes: super::disk_write_bytes().unwrap_or(0),
            };
            let meta = self.meta_due
                || self.reserve != self.durable
                || self.last_meta.elapsed() >= META_EVERY;
            let result = self.db.commit(
                inserts[..n].iter().map(|q| (q.id, q.created_ms, &q.msg)),
                deletes,
                meta.then_some((self.reserve, &run)),
                (&self.caps, &self.held),
                &self.memory_drops,
                &state,
            );
            let (max_id, drops) = match result {
                Ok(done) => done,
                Err(e) => {
                    self.state.restore(state);
                    if n > 1 {
                        self.batch = (n / 2).min(RECOVERY_BATCH);
                        continue;
                    }
                    self.batch = 1;
                    // What was written before the disk filled may still be in the WAL.
                    let _ = self.db.checkpoint();
                    if n == 1 && self.has_small_changes(deletes) {
                        acks_only = Some(e);
                        continue;
                    }
                    self.hold(inserts, Some(&e));
                    return Commit::Failed;
                }
            };
            self.count_drops(&drops);
            self.drop_report.add(drops);
            self.memory_drops.clear();
            self.durable = self.reserve;
            self.seq_bound
                .store(self.durable.next_seq, Ordering::Relaxed);
            self.meta_due = false;
            if meta {
                self.last_meta = std::time::Instant::now();
            }
            Counters::add(&self.counters.commits, 1);
            Counters::add(&self.counters.written, n as u64);
            if max_id > *self.committed.borrow() {
                self.committed.send_replace(max_id);
            }
            for q in inserts.drain(..n) {
                self.waiters.extend(q.committed);
            }
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
            if !deletes.is_empty() {
                self.acks_committed.send_replace(self.acks_seen);
            }
            deletes.clear();
            if inserts.is_empty() {
                self.batch = MEMORY_CAP;
                if self.failing {
                    tracing::info!(
                        "buffer database writable again; the messages held in memory are written"
                    );
                    self.failing = false;
                    self.healthy.send_replace(true);
                }
                return Commit::Done;
            }
            if let Some(e) = acks_only {
                let _ = self.db.checkpoint();
                self.hold(inserts, Some(&e));
                return Commit::Failed;
            }
            if n == self.batch && self.batch < RECOVERY_BATCH {
                self.batch = (self.batch * 2).min(RECOVERY_BATCH);
            }
            if self.failing {
                // On a full disk a WAL that grows can only be moved into the database while that
                // still has room: move each batch at once, so the WAL stays small and its space
                // is reused, and acknowledgements can still be written (they free pages).
                let _ = self.db.checkpoint();
                return Commit::Partial;
            }
        }
    }

    fn has_small_changes(&self, deletes: &[i64]) -> bool {
        !deletes.is_empty() || !self.memory_drops.is_empty() || !self.state.is_empty()
    }

    /// Rows handed to a reader (the uplink), which may deliver them: the caps leave them alone.
    fn read(&mut self, rows: &Result<Vec<db::Row>, rusqlite::Error>) {
        if let Ok(rows) = rows {
            self.held.read(rows.iter().map(|r| r.id));
        }
    }

    /// Bytes the database's file system still takes, or `None` if it does not say.
    fn room(&self) -> Option<u64> {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => free_bytes(dir),
            _ => free_bytes(Path::new(".")),
        }
    }

    /// Keeps what the database refused in memory, bounded; the first time, says so.
    fn hold(&mut self, inserts: &mut Batch, e: Option<&rusqlite::Error>) {
        if !self.failing {
            let why = e.map_or_else(|| "no room left".to_string(), |e| e.to_string());
            tracing::error!(
                "cannot write buffer database {}: {why}; holding up to {MEMORY_CAP} messages \
                 in memory, retrying every {:?}",
                self.path.display(),
                self.interval
            );
            self.failing = true;
            self.healthy.send_replace(false);
        }
        let mut drops = db::Drops::new();
        let shed = shed_oldest_telemetry(inserts, MEMORY_CAP, &mut drops);
        self.waiters.extend(shed);
        for (k, n) in drops.clone() {
            *self.memory_drops.entry(k).or_default() += n;
        }
        self.count_drops(&drops);
        self.drop_report.add(drops);
    }

    fn count_drops(&self, drops: &db::Drops) {
        if drops.is_empty() {
            return;
        }
        self.drop_totals.send_modify(|t| {
            for ((reason, device), n) in drops {
                *t.entry((reason.to_string(), device.clone())).or_default() += n;
            }
        });
    }
}

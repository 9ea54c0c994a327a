//! The writer thread: the one place that holds the database connection for writing. It batches
//! inserts, acknowledgements and state changes into one transaction per commit interval, and
//! holds them in memory, bounded, while the disk refuses them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{db, state, Caps, Class, Cmd, DropTotals, Outgoing, MAX_BATCH};

pub(super) struct Writer {
    pub(super) db: db::Db,
    pub(super) rx: mpsc::Receiver<Cmd>,
    pub(super) seq: Arc<AtomicU64>,
    pub(super) committed: watch::Sender<i64>,
    /// How many acknowledged rows have been deleted for good, in the order of their `Ack`s.
    pub(super) acks_committed: watch::Sender<u64>,
    pub(super) interval: Duration,
    pub(super) caps: Caps,
    pub(super) drop_report: DropReport,
    /// Drops while the database could not be written, counted into it once it can be.
    pub(super) memory_drops: db::Drops,
    pub(super) healthy: watch::Sender<bool>,
    pub(super) drop_totals: watch::Sender<DropTotals>,
    pub(super) path: PathBuf,
    pub(super) state: Arc<state::Shared>,
    /// Fired by the next commit that succeeds (see [`super::Store::enqueue_then`]).
    pub(super) waiters: Vec<super::Committed>,
}

/// Drops are logged once per burst: at the first, then a summary at most every
/// `DROP_LOG_EVERY` while they go on.
#[derive(Default)]
pub(super) struct DropReport {
    last_log: Option<std::time::Instant>,
    pending: db::Drops,
}

const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

impl DropReport {
    fn add(&mut self, drops: db::Drops) {
        for (k, n) in drops {
            *self.pending.entry(k).or_default() += n;
        }
        if self.pending.is_empty() {
            return;
        }
        let due = self.last_log.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY);
        if due {
            let total: u64 = self.pending.values().sum();
            let detail: Vec<String> = self
                .pending
                .iter()
                .map(|((reason, device), n)| {
                    let device = if device.is_empty() { "-" } else { device };
                    format!("{n} from {device} ({reason})")
                })
                .collect();
            tracing::warn!(
                "buffer full: dropped the {total} oldest telemetry messages: {}",
                detail.join(", ")
            );
            self.pending.clear();
            self.last_log = Some(std::time::Instant::now());
        }
    }
}

/// While the database cannot be written, at most this many messages wait in memory.
pub(super) const MEMORY_CAP: usize = 100_000;

/// Drops the oldest telemetry from `queue` until it holds at most `cap` (alarms always stay).
pub(super) fn shed_oldest_telemetry(queue: &mut Vec<Outgoing>, cap: usize, drops: &mut db::Drops) {
    let mut excess = queue.len().saturating_sub(cap);
    if excess == 0 {
        return;
    }
    queue.retain(|m| {
        if excess > 0 && m.class == Class::Telemetry {
            excess -= 1;
            *drops
                .entry((DROP_MEMORY_FULL, m.device.clone()))
                .or_default() += 1;
            false
        } else {
            true
        }
    });
}

/// Drop reason: the database could not be written and the memory queue was full.
pub const DROP_MEMORY_FULL: &str = "memory_full";

impl Writer {
    pub(super) fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("buffer writer cannot start: {e}");
                return;
            }
        };
        rt.block_on(self.serve());
    }

    async fn serve(&mut self) {
        let mut inserts: Vec<Outgoing> = Vec::new();
        let mut deletes: Vec<i64> = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut failing = false;
        loop {
            let cmd = match deadline {
                Some(d) => tokio::select! {
                    c = self.rx.recv() => c,
                    _ = tokio::time::sleep_until(d) => {
                        failing = !self.commit(&mut inserts, &mut deletes, failing);
                        deadline = (failing).then(|| tokio::time::Instant::now() + self.interval);
                        continue;
                    }
                },
                None => tokio::select! {
                    c = self.rx.recv() => c,
                    _ = self.state.changed() => {
                        deadline = Some(tokio::time::Instant::now() + self.interval);
                        continue;
                    }
                },
            };
            let Some(cmd) = cmd else { break };
            match cmd {
                Cmd::Enqueue(m, committed) => {
                    inserts.push(m);
                    self.waiters.extend(committed);
                }
                Cmd::Ack(id) => deletes.push(id),
                Cmd::Fetch {
                    after,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(self.db.fetch_after(after, limit));
                }
                Cmd::Range {
                    after,
                    upto,
                    class,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(self.db.fetch_range(after, upto, class, limit));
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
                    failing = !self.commit(&mut inserts, &mut deletes, failing);
                    deadline = None;
                    let _ = reply.send(());
                }
            }
            if inserts.len() + deletes.len() >= MAX_BATCH && !failing {
                failing = !self.commit(&mut inserts, &mut deletes, failing);
            }
            if deadline.is_none() && !(inserts.is_empty() && deletes.is_empty()) {
                deadline = Some(tokio::time::Instant::now() + self.interval);
            }
        }
        self.commit(&mut inserts, &mut deletes, failing);
    }

    /// Writes one batch in one transaction. On failure the batch stays queued in memory, bounded
    /// by `MEMORY_CAP` (the oldest telemetry goes first, counted as `memory_full`), for the next
    /// try.
    fn commit(
        &mut self,
        inserts: &mut Vec<Outgoing>,
        deletes: &mut Vec<i64>,
        failing: bool,
    ) -> bool {
        if inserts.is_empty()
            && deletes.is_empty()
            && self.state.is_empty()
            && self.waiters.is_empty()
        {
            return true;
        }
        let next_seq = self.seq.load(Ordering::Relaxed);
        let state = self.state.take();
        let result = self.db.commit(
            inserts,
            deletes,
            next_seq,
            &self.caps,
            &self.memory_drops,
            &state,
        );
        if result.is_err() {
            self.state.restore(state);
        }
        match result {
            Ok((max_id, drops)) => {
                self.count_drops(&drops);
                self.drop_report.add(drops);
                self.memory_drops.clear();
                if failing {
                    tracing::info!(
                        "buffer database writable again; committed {} messages held in memory",
                        inserts.len()
                    );
                    self.healthy.send_replace(true);
                }
                if !inserts.is_empty() {
                    self.committed.send_replace(max_id);
                }
                for w in self.waiters.drain(..) {
                    let _ = w.send(());
                }
                if !deletes.is_empty() {
                    let n = deletes.len() as u64;
                    self.acks_committed.send_modify(|c| *c += n);
                }
                inserts.clear();
                deletes.clear();
                true
            }
            Err(e) => {
                if !failing {
                    tracing::error!(
                        "cannot write buffer database {}: {e}; holding up to {MEMORY_CAP} messages \
                         in memory, retrying every {:?}",
                        self.path.display(),
                        self.interval
                    );
                    self.healthy.send_replace(false);
                }
                let mut drops = db::Drops::new();
                shed_oldest_telemetry(inserts, MEMORY_CAP, &mut drops);
                for (k, n) in drops.clone() {
                    *self.memory_drops.entry(k).or_default() += n;
                }
                self.count_drops(&drops);
                self.drop_report.add(drops);
                false
            }
        }
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

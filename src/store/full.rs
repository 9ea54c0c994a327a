//! What the writer needs while the disk refuses it: the memory cap and the shedding of the
//! oldest telemetry past it, batches sized to the room left, and drop reports once per burst.

use std::path::Path;
use std::time::Duration;

use super::db;
use super::pending::Queued;
use super::Class;

/// Drops are logged once per burst: at the first, then a summary at most every
/// `DROP_LOG_EVERY` while they go on.
#[derive(Default)]
pub(super) struct DropReport {
    last_log: Option<std::time::Instant>,
    pending: db::Drops,
}

const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

impl DropReport {
    pub(super) fn add(&mut self, drops: db::Drops) {
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
/// Returns the waiters of what it dropped.
pub(super) fn shed_oldest_telemetry(
    queue: &mut Vec<Queued>,
    cap: usize,
    drops: &mut db::Drops,
) -> Vec<super::Committed> {
    let mut excess = queue.len().saturating_sub(cap);
    let mut waiters = Vec::new();
    if excess == 0 {
        return waiters;
    }
    queue.retain_mut(|q| {
        if excess > 0 && q.msg.class == Class::Telemetry {
            excess -= 1;
            *drops
                .entry((DROP_MEMORY_FULL, q.msg.device.clone()))
                .or_default() += 1;
            waiters.extend(q.committed.take());
            false
        } else {
            true
        }
    });
    waiters
}

/// Drop reason: the database could not be written and the memory queue was full.
pub const DROP_MEMORY_FULL: &str = "memory_full";

/// Room kept free on the disk: what the acknowledgements and the checkpoint of the last batch
/// need, so that a full disk never wedges the database with a WAL it cannot move.
const RESERVE: u64 = 128 * 1024;

/// How many of the first `max` messages fit in `room` bytes: a row takes its bytes once in the
/// WAL and once more in the database when checkpointed, plus page overhead; 3x covers it.
pub(super) fn fitting(inserts: &[Queued], max: usize, room: Option<u64>) -> usize {
    let Some(room) = room else {
        return inserts.len().min(max);
    };
    let mut budget = room.saturating_sub(RESERVE) / 3;
    inserts
        .iter()
        .take(max)
        .take_while(|q| {
            let size = (q.msg.topic.len() + q.msg.payload.len() + 64) as u64;
            let fits = size <= budget;
            budget = budget.saturating_sub(size);
            fits
        })
        .count()
}

/// Bytes an unprivileged writer may still put on the file system of `dir`.
// The fields are u32 on the 32-bit Pi targets.
#[allow(clippy::useless_conversion)]
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into `st`, which is zeroed plain data of the right type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

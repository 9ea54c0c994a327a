//! The `meta` page: the reservation of ids and sequence numbers, the time of the last commit
//! that wrote it, and the counters of the run.

use rusqlite::{params, Connection, OptionalExtension};

/// Ids and sequence numbers handed out ahead of their rows' commit: everything below these
/// may have been used (sent upstream from memory), so a new run starts at them. Raised a block
/// at a time, so that a healthy link costs no write per reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub next_id: i64,
    pub next_seq: u64,
}

/// What a run of the gateway wrote, since it started (kept in `meta` with every commit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Unix milliseconds when the run opened the buffer, and of its last commit.
    pub since_ms: i64,
    pub last_commit_ms: i64,
    /// Messages written to the database.
    pub written: u64,
    /// Messages acknowledged upstream before their commit, so never written.
    pub elided: u64,
    pub commits: u64,
    /// Bytes the process wrote to disk (`write_bytes` of /proc/self/io; 0 where unknown).
    pub disk_bytes: u64,
}

const RUN_KEYS: [&str; 5] = [
    "run_since_ms",
    "run_written",
    "run_elided",
    "run_commits",
    "run_disk_bytes",
];

/// The reservation, the time of this commit and the run's counters: one page of `meta`, written
/// only when the reservation moves or a minute has passed, so that a commit of a few readings
/// does not also rewrite it.
pub(super) fn write(
    tx: &rusqlite::Transaction<'_>,
    reserved: Reserved,
    run: &RunStats,
    now: i64,
) -> rusqlite::Result<()> {
    let mut raise = tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
    )?;
    raise.execute(params!["next_seq", reserved.next_seq as i64])?;
    raise.execute(params!["next_id", reserved.next_id])?;
    let mut set = tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?;
    set.execute(params!["last_commit_ms", now])?;
    let values = [
        run.since_ms,
        run.written as i64,
        run.elided as i64,
        run.commits as i64,
        run.disk_bytes as i64,
    ];
    for (key, value) in RUN_KEYS.iter().zip(values) {
        set.execute(params![key, value])?;
    }
    Ok(())
}

/// The counters of the last run that wrote them, if any did.
pub(super) fn read_run(conn: &Connection) -> rusqlite::Result<Option<RunStats>> {
    let meta = |key: &str| -> rusqlite::Result<Option<i64>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    let run = match meta(RUN_KEYS[0])? {
        Some(since_ms) => {
            let n = |key: &str| meta(key).map(|v| v.unwrap_or(0).max(0) as u64);
            Some(RunStats {
                since_ms,
                last_commit_ms: meta("last_commit_ms")?.unwrap_or(since_ms),
                written: n(RUN_KEYS[1])?,
                elided: n(RUN_KEYS[2])?,
                commits: n(RUN_KEYS[3])?,
                disk_bytes: n(RUN_KEYS[4])?,
            })
        }
        None => None,
    };
    Ok(run)
}

//! SQL for the outbox. Only the store's writer thread holds this connection.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::compact::Topics;
pub use super::meta::{Reserved, RunStats};
use super::{Class, Outgoing};

/// Page size of new files. Smaller pages mean fewer bytes rewritten per small commit: at 100
/// readings/s and 200 ms commits, 1 KiB pages write about half of what 4 KiB pages do
/// (docs/benchmarks.md); the B-tree is a level deeper, which bulk throughput does not notice.
const PAGE_SIZE: i64 = 1024;

/// A committed outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub class: Class,
    pub device: String,
    /// Unix milliseconds at commit.
    pub created_ms: i64,
}

/// What the outbox holds right now, and what it has had to drop since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub rows: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
    /// (reason, device, count), sorted.
    pub drops: Vec<(String, String, u64)>,
    /// The running (or last) gateway's writes, as of its last commit.
    pub run: Option<RunStats>,
}

/// Limits past which the oldest telemetry is dropped. Alarms are never dropped, nor is a row the
/// uplink has read and may still deliver (see `held`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_bytes: u64,
    pub max_rows: u64,
    pub max_age: Option<std::time::Duration>,
    /// How many rows the uplink can hold at once, sent or read ahead: its in-flight window
    /// plus [`UPLINK_READ_AHEAD`]. That many of the rows it read most recently are left alone.
    pub held: usize,
}

/// Rows the uplink reads ahead of its window, at most: 500 for each of its three lanes.
pub const UPLINK_READ_AHEAD: usize = 3 * 500;

impl Caps {
    pub const NONE: Caps = Caps {
        max_bytes: u64::MAX,
        max_rows: u64::MAX,
        max_age: None,
        // The default window (uplink.max_inflight) and the read-ahead.
        held: 100 + UPLINK_READ_AHEAD,
    };
}

/// Drop reasons, as counted and shown.
pub const DROP_MAX_BYTES: &str = "max_bytes";
pub const DROP_MAX_ROWS: &str = "max_rows";
pub const DROP_MAX_AGE: &str = "max_age";

/// Messages dropped by one commit, by (reason, device).
pub type Drops = std::collections::BTreeMap<(&'static str, String), u64>;

pub struct Db {
    conn: Connection,
    /// The first id no earlier run can have handed out.
    next_id: i64,
    /// Totals of the committed table, kept here so caps cost no query per commit.
    rows: u64,
    bytes: u64,
    topics: Topics,
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Size a row counts for against `max_bytes`, in bytes like the writer adds it: `LENGTH` of
/// TEXT counts characters, so a non-ASCII topic would free less than it took. A small row has
/// an empty topic and payload and the size of the message it stands for.
const SIZE: &str =
    "LENGTH(CAST(topic AS BLOB)) + LENGTH(CAST(payload AS BLOB)) + COALESCE(size, 0)";

/// The columns `row` reads, in order.
const ROW: &str = "id, topic, payload, qos, retain, class, device, created_ms, \
     topic_id, value, lag, seq, flags";

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            // Only takes effect on a file with no tables yet, and must precede WAL.
            conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        }
        // WAL lets `buffer stats` read while the service writes; FULL makes each commit durable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut db = Db {
            conn,
            next_id: 1,
            rows: 0,
            bytes: 0,
            topics: Topics::default(),
        };
        super::schema::migrate(&mut db.conn)?;
        db.topics = Topics::load(&db.conn)?;
        let (rows, bytes): (i64, i64) = db.conn.query_row(
            &format!("SELECT COUNT(*), COALESCE(SUM({SIZE}), 0) FROM outbox"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        db.rows = rows as u64;
        db.bytes = bytes as u64;
        db.next_id = db.meta("next_id")?.unwrap_or(1).max(db.max_id()? + 1);
        Ok(db)
    }

    /// [`Db::open`] for a reader beside the service (`buffer stats|export`): `None` while the file
    /// has no schema yet, which only the gateway creates (a reader creating it too would race
    /// the gateway's own creation).
    pub fn open_existing(path: &Path) -> rusqlite::Result<Option<Db>> {
        let conn = Connection::open(path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        drop(conn);
        if version == 0 {
            return Ok(None);
        }
        Db::open(path).map(Some)
    }

    fn meta(&self, key: &str) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    /// The first row id not handed out by an earlier run.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// The first sequence number not yet handed out by an earlier run.
    pub fn next_seq(&self) -> rusqlite::Result<u64> {
        Ok(self.meta("next_seq")?.map(|v| v.max(1) as u64).unwrap_or(1))
    }

    /// Wall-clock time of the last commit, Unix milliseconds (none before the first).
    pub fn last_commit_ms(&self) -> rusqlite::Result<Option<i64>> {
        self.meta("last_commit_ms")
    }

    pub fn max_id(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM outbox", [], |r| r.get(0))
    }

    /// One transaction: new rows (id, Unix ms when handed over, message), acknowledged
    /// deletions, caps (which leave `held` rows alone), drop counters and the reservation of
    /// ids and sequence numbers. Returns the highest new row id (0 if none) and what the caps
    /// dropped.
    pub fn commit<'a>(
        &mut self,
        inserts: impl IntoIterator<Item = (i64, i64, &'a Outgoing)>,
        deletes: &[i64],
        meta: Option<(Reserved, &RunStats)>,
        caps: (&Caps, &super::held::Held),
        carried: &Drops,
        state: &super::state::Pending,
    ) -> rusqlite::Result<(i64, Drops)> {
        let first_new_topic = self.topics.next_id();
        let r = self.transact(inserts, deletes, meta, caps, carried, state);
        if r.is_err() {
            // Rolled back: the topics it interned are not in the table.
            self.topics.forget_from(first_new_topic);
        }
        r
    }

    fn transact<'a>(
        &mut self,
        inserts: impl IntoIterator<Item = (i64, i64, &'a Outgoing)>,
        deletes: &[i64],
        meta: Option<(Reserved, &RunStats)>,
        (caps, held): (&Caps, &super::held::Held),
        carried: &Drops,
        state: &super::state::Pending,
    ) -> rusqlite::Result<(i64, Drops)> {
        let now = now_ms();
        let (mut rows, mut bytes) = (self.rows, self.bytes);
        let mut drops = Drops::new();
        let tx = self.conn.transaction()?;
        let mut max_id = 0;
        {
            let mut whole = tx.prepare_cached(
                "INSERT INTO outbox (id, topic, payload, qos, retain, class, device, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut small = tx.prepare_cached(
                "INSERT INTO outbox (id, topic, payload, qos, retain, class, device, created_ms,
                     topic_id, value, lag, seq, flags, size)
                 VALUES (?1, '', x'', ?2, ?3, ?4, '', ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for (id, created, m) in inserts {
                match self.topics.fields(&tx, m, created)? {
                    Some(f) => small.execute(params![
                        id,
                        m.qos,
                        m.retain,
                        m.class as i64,
                        created,
                        f.topic_id,
                        f.value,
                        f.lag,
                        f.seq,
                        f.flags,
                        f.size
                    ])?,
                    None => whole.execute(params![
                        id,
                        m.topic,
                        &m.payload[..],
                        m.qos,
                        m.retain,
                        m.class as i64,
                        m.device,
                        created
                    ])?,
                };
                max_id = max_id.max(id);
                rows += 1;
                bytes += (m.topic.len() + m.payload.len()) as u64;
            }
            // Acks arrive nearly in id order, so a batch is a few runs of consecutive ids: one
            // statement per run instead of one per row keeps commits short while a backlog drains.
            let mut del = tx.prepare_cached(&format!(
                "SELECT COUNT(*), COALESCE(SUM({SIZE}), 0) FROM outbox WHERE id BETWEEN ?1 AND ?2"
            ))?;
            let mut del_run = tx.prepare_cached("DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2")?;
            for (first, last) in runs(deletes) {
                let (n, size): (i64, i64) =
                    del.query_row([first, last], |r| Ok((r.get(0)?, r.get(1)?)))?;
                if n > 0 {
                    del_run.execute([first, last])?;
                    rows = rows.saturating_sub(n as u64);
                    bytes = bytes.saturating_sub(size as u64);
                }
            }
            let cap = Totals {
                rows: &mut rows,
                bytes: &mut bytes,
                drops: &mut drops,
            };
            enforce_caps(&tx, (caps, held), &self.topics, now, cap)?;
            let mut count = tx.prepare_cached(
                "INSERT INTO drops (reason, device, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT(reason, device) DO UPDATE SET count = count + excluded.count",
            )?;
            for ((reason, device), n) in drops.iter().chain(carried) {
                count.execute(params![reason, device, *n as i64])?;
            }
            if let Some((reserved, run)) = meta {
                super::meta::write(&tx, reserved, run, now)?;
            }
            super::state::apply(&tx, state)?;
        }
        tx.commit()?;
        (self.rows, self.bytes) = (rows, bytes);
        Ok((max_id, drops))
    }

    /// Rows with `after < id <= upto`, of `class` if given, oldest first.
    pub fn fetch_range(
        &self,
        after: i64,
        upto: i64,
        class: Option<Class>,
        limit: usize,
    ) -> rusqlite::Result<Vec<Row>> {
        // The class is spelled out, not bound, so alarms are read through their partial index.
        let filter = match class {
            None => "",
            Some(Class::Telemetry) => "AND class = 0",
            Some(Class::Alarm) => "AND class = 1",
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW} FROM outbox WHERE id > ?1 AND id <= ?2 {filter} ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![after, upto, limit as i64], |r| row(r, &self.topics))?;
        rows.collect()
    }

    pub fn fetch_after(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<Row>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW} FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after, limit as i64], |r| row(r, &self.topics))?;
        rows.collect()
    }

    pub fn drop_totals(&self) -> rusqlite::Result<super::DropTotals> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT reason, device, count FROM drops")?;
        let rows = stmt.query_map([], |r| {
            Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)? as u64))
        })?;
        rows.collect()
    }

    pub fn stats(&self) -> rusqlite::Result<Stats> {
        stats(&self.conn)
    }

    /// Copies what the WAL holds into the database, here and now, so the next commit can write
    /// the WAL from its start again instead of growing it.
    pub fn checkpoint(&self) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    }

    /// From now on WAL checkpoints are left to whoever listens on the returned receiver.
    pub fn checkpoint_elsewhere(&mut self) -> rusqlite::Result<std::sync::mpsc::Receiver<()>> {
        super::checkpoint::hand_off(&mut self.conn)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// `ids` as inclusive runs of consecutive ids, ascending, duplicates merged.
fn runs(ids: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for id in sorted {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => out.push((id, id)),
        }
    }
    out
}

#[cfg(test)]
#[test]
fn acks_coalesce_into_runs() {
    assert_eq!(runs(&[5, 3, 4, 9, 4, 10, 1]), vec![(1, 1), (3, 5), (9, 10)]);
    assert_eq!(runs(&[]), vec![]);
}

/// A row from the columns `ROW`, its payload rendered again if it is a small row.
fn row(r: &rusqlite::Row<'_>, topics: &Topics) -> rusqlite::Result<Row> {
    let created_ms = r.get(7)?;
    let (topic, device, payload) = match topics.rebuild(r, 8, created_ms)? {
        Some(small) => small,
        None => (r.get(1)?, r.get(6)?, r.get(2)?),
    };
    Ok(Row {
        id: r.get(0)?,
        topic,
        payload,
        qos: r.get(3)?,
        retain: r.get(4)?,
        class: Class::from_i64(r.get(5)?),
        device,
        created_ms,
    })
}

/// The committed table's totals and what the caps dropped, as one commit updates them.
struct Totals<'a> {
    rows: &'a mut u64,
    bytes: &'a mut u64,
    drops: &'a mut Drops,
}

/// Drops the oldest telemetry while any cap is exceeded; alarms stay even past the caps, and so
/// do rows the uplink holds. Counts only the rows its deletes removed.
fn enforce_caps(
    tx: &rusqlite::Transaction<'_>,
    (caps, held): (&Caps, &super::held::Held),
    topics: &Topics,
    now: i64,
    Totals { rows, bytes, drops }: Totals<'_>,
) -> rusqlite::Result<()> {
    let mut drop_oldest = |reason: &'static str,
                           n: u64,
                           older_than: i64,
                           rows: &mut u64,
                           bytes: &mut u64|
     -> rusqlite::Result<u64> {
        let mut pick = tx.prepare_cached(
            "SELECT id FROM outbox WHERE class = 0 AND created_ms < ?1 ORDER BY id LIMIT ?2",
        )?;
        let scan = n.saturating_add(held.len() as u64).min(i64::MAX as u64);
        let mut ids = Vec::new();
        let mut q = pick.query(params![older_than, scan as i64])?;
        while let Some(r) = q.next()? {
            let id: i64 = r.get(0)?;
            if !held.contains(id) {
                ids.push(id);
                if ids.len() as u64 == n {
                    break;
                }
            }
        }
        let mut del = tx.prepare_cached(&format!(
            "DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2 AND class = 0
             RETURNING device, {SIZE}, topic_id"
        ))?;
        let mut gone = 0;
        for (first, last) in runs(&ids) {
            let mut q = del.query([first, last])?;
            while let Some(r) = q.next()? {
                let mut device: String = r.get(0)?;
                let size: i64 = r.get(1)?;
                if let Some(d) = r.get::<_, Option<i64>>(2)?.and_then(|t| topics.device(t)) {
                    device = d.to_string();
                }
                *drops.entry((reason, device)).or_default() += 1;
                *rows = rows.saturating_sub(1);
                *bytes = bytes.saturating_sub(size as u64);
                gone += 1;
            }
        }
        Ok(gone)
    };
    if let Some(age) = caps.max_age {
        let cutoff = now - age.as_millis() as i64;
        let oldest: Option<i64> = tx
            .query_row(
                "SELECT created_ms FROM outbox WHERE class = 0 ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if oldest.is_some_and(|o| o < cutoff) {
            // Rows are created in id order, so the expired ones are the oldest telemetry: take
            // them a chunk at a time, and stop at the first chunk that was not all expired.
            const CHUNK: u64 = 10_000;
            while drop_oldest(DROP_MAX_AGE, CHUNK, cutoff, rows, bytes)? == CHUNK {}
        }
    }
    if *rows > caps.max_rows {
        drop_oldest(DROP_MAX_ROWS, *rows - caps.max_rows, i64::MAX, rows, bytes)?;
    }
    while *bytes > caps.max_bytes && *rows > 0 {
        // Estimate how many rows free the excess, so a large overshoot takes few statements.
        let avg = *bytes as f64 / *rows as f64;
        let n = (((*bytes - caps.max_bytes) as f64 / avg).ceil() as u64).clamp(1, 10_000);
        if drop_oldest(DROP_MAX_BYTES, n, i64::MAX, rows, bytes)? == 0 {
            break;
        }
    }
    Ok(())
}

/// Stats from any connection: the writer's, or a reader's while the service runs.
pub fn stats(conn: &Connection) -> rusqlite::Result<Stats> {
    let (rows, bytes, oldest_ms) = conn.query_row(
        &format!("SELECT COUNT(*), COALESCE(SUM({SIZE}), 0), MIN(created_ms) FROM outbox"),
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get(2)?,
            ))
        },
    )?;
    let mut stmt =
        conn.prepare_cached("SELECT reason, device, count FROM drops ORDER BY reason, device")?;
    let drops = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let run = super::meta::read_run(conn)?;
    Ok(Stats {
        rows,
        bytes,
        oldest_ms,
        drops,
        run,
    })
}

/// Every committed row, oldest first, from any connection.
pub fn each_row(conn: &Connection, mut f: impl FnMut(Row) -> bool) -> rusqlite::Result<()> {
    let topics = Topics::load(conn)?;
    let mut stmt = conn.prepare(&format!("SELECT {ROW} FROM outbox ORDER BY id"))?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        if !f(row(r, &topics)?) {
            break;
        }
    }
    Ok(())
}

//! SQL for the outbox. Only the store's writer thread holds this connection.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::Outgoing;

/// Bumped with every schema change; `migrate` brings older files up to it.
const SCHEMA_VERSION: i64 = 1;

/// A committed outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Unix milliseconds at commit.
    pub created_ms: i64,
}

/// What the outbox holds right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub rows: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
}

pub struct Db {
    conn: Connection,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL lets `buffer stats` read while the service writes; FULL makes each commit durable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut db = Db { conn };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < 1 {
            let tx = self.conn.transaction()?;
            // AUTOINCREMENT: ids never go backwards, even after the table was emptied, so the
            // uplink's "everything after id N" cursor can never skip a row.
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     topic TEXT NOT NULL,
                     payload BLOB NOT NULL,
                     qos INTEGER NOT NULL,
                     retain INTEGER NOT NULL,
                     created_ms INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS meta (
                     key TEXT PRIMARY KEY,
                     value INTEGER NOT NULL
                 );",
            )?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The first sequence number not yet handed out by an earlier run.
    pub fn next_seq(&self) -> rusqlite::Result<u64> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.map(|v| v.max(1) as u64).unwrap_or(1))
    }

    pub fn max_id(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM outbox", [], |r| r.get(0))
    }

    /// One transaction: new rows, acknowledged deletions, and the sequence counter.
    /// Returns the highest row id in the table afterwards.
    pub fn commit(
        &mut self,
        inserts: &[Outgoing],
        deletes: &[i64],
        next_seq: u64,
    ) -> rusqlite::Result<i64> {
        let created = now_ms();
        let tx = self.conn.transaction()?;
        let mut max_id = 0;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO outbox (topic, payload, qos, retain, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for m in inserts {
                ins.execute(params![m.topic, &m.payload[..], m.qos, m.retain, created])?;
                max_id = tx.last_insert_rowid();
            }
            let mut del = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in deletes {
                del.execute([id])?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('next_seq', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
                [next_seq as i64],
            )?;
        }
        tx.commit()?;
        Ok(max_id)
    }

    pub fn fetch_after(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<Row>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, topic, payload, qos, retain, created_ms FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok(Row {
                id: r.get(0)?,
                topic: r.get(1)?,
                payload: r.get(2)?,
                qos: r.get(3)?,
                retain: r.get(4)?,
                created_ms: r.get(5)?,
            })
        })?;
        rows.collect()
    }

    pub fn stats(&self) -> rusqlite::Result<Stats> {
        self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(topic) + LENGTH(payload)), 0), MIN(created_ms) FROM outbox",
            [],
            |r| {
                Ok(Stats {
                    rows: r.get::<_, i64>(0)? as u64,
                    bytes: r.get::<_, i64>(1)? as u64,
                    oldest_ms: r.get(2)?,
                })
            },
        )
    }
}

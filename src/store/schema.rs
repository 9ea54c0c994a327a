//! The outbox file's schema and its migrations by `user_version`, from every earlier version.

use rusqlite::Connection;

/// Bumped with every schema change; `migrate` brings older files up to it, step by step.
const SCHEMA_VERSION: i64 = 5;

const META_AND_DROPS: &str = "CREATE TABLE meta (
         key TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE drops (
         reason TEXT NOT NULL,
         device TEXT NOT NULL,
         count INTEGER NOT NULL,
         PRIMARY KEY (reason, device)
     );";

/// The outbox as created by schema version 4. No AUTOINCREMENT: ids come from `next_id` in
/// `meta`, which shares a page with `next_seq` and so costs no extra page write per commit
/// (AUTOINCREMENT's `sqlite_sequence` did). Only alarms are indexed by class, so telemetry
/// inserts touch no index page.
const OUTBOX_V4: &str = "CREATE TABLE outbox (
         id INTEGER PRIMARY KEY,
         topic TEXT NOT NULL,
         payload BLOB NOT NULL,
         qos INTEGER NOT NULL,
         retain INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         class INTEGER NOT NULL DEFAULT 0,
         device TEXT NOT NULL DEFAULT ''
     );
     CREATE INDEX outbox_alarms ON outbox (id) WHERE class = 1;";

/// Version 5: small rows for readings (see `compact`). Added columns, so rows written by
/// version 4 stay as they are and read as whole rows.
const OUTBOX_V5: &str = "CREATE TABLE topics (
         id INTEGER PRIMARY KEY,
         topic TEXT NOT NULL,
         device TEXT NOT NULL,
         unit TEXT
     );
     ALTER TABLE outbox ADD COLUMN topic_id INTEGER;
     ALTER TABLE outbox ADD COLUMN value;
     ALTER TABLE outbox ADD COLUMN lag INTEGER;
     ALTER TABLE outbox ADD COLUMN seq INTEGER;
     ALTER TABLE outbox ADD COLUMN flags INTEGER;
     ALTER TABLE outbox ADD COLUMN size INTEGER;";

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let empty: bool = conn.query_row(
        "SELECT COUNT(*) = 0 FROM sqlite_master WHERE name = 'outbox'",
        [],
        |r| r.get(0),
    )?;
    if version > SCHEMA_VERSION {
        // Rows of a later version may not read as whole rows: sending them would be wrong.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "its schema version is {version}, from a newer edgegate than this one (which \
                 knows up to {SCHEMA_VERSION}); run that release again, or move the file \
                 aside to start with an empty buffer"
            )),
        ));
    }
    if version == 0 && empty {
        let tx = conn.transaction()?;
        tx.execute_batch(OUTBOX_V4)?;
        tx.execute_batch(OUTBOX_V5)?;
        tx.execute_batch(META_AND_DROPS)?;
        tx.execute_batch(super::state::SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        return tx.commit();
    }
    if version < 1 {
        let tx = conn.transaction()?;
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
        tx.pragma_update(None, "user_version", 1)?;
        tx.commit()?;
    }
    if version < 2 {
        let tx = conn.transaction()?;
        tx.execute_batch(
            "ALTER TABLE outbox ADD COLUMN class INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE outbox ADD COLUMN device TEXT NOT NULL DEFAULT '';
             CREATE INDEX IF NOT EXISTS outbox_class ON outbox (class, id);
             CREATE TABLE IF NOT EXISTS drops (
                 reason TEXT NOT NULL,
                 device TEXT NOT NULL,
                 count INTEGER NOT NULL,
                 PRIMARY KEY (reason, device)
             );",
        )?;
        tx.pragma_update(None, "user_version", 2)?;
        tx.commit()?;
    }
    if version < 3 {
        let tx = conn.transaction()?;
        tx.execute_batch(super::state::SCHEMA)?;
        tx.pragma_update(None, "user_version", 3)?;
        tx.commit()?;
    }
    if version < 4 {
        // Rebuild without AUTOINCREMENT, carrying its counter over so ids never go back.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "ALTER TABLE outbox RENAME TO outbox_v3;
             DROP INDEX IF EXISTS outbox_class;",
        )?;
        tx.execute_batch(OUTBOX_V4)?;
        tx.execute_batch(
            "INSERT INTO outbox (id, topic, payload, qos, retain, created_ms, class, device)
                 SELECT id, topic, payload, qos, retain, created_ms, class, device
                 FROM outbox_v3;
             INSERT INTO meta (key, value)
                 SELECT 'next_id', MAX(seq) + 1 FROM sqlite_sequence
                 WHERE name IN ('outbox', 'outbox_v3') AND seq IS NOT NULL
                 ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value);
             DROP TABLE outbox_v3;",
        )?;
        tx.pragma_update(None, "user_version", 4)?;
        tx.commit()?;
    }
    if version < 5 {
        let tx = conn.transaction()?;
        tx.execute_batch(OUTBOX_V5)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}

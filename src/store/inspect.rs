//! Read access for `edgegate buffer stats|export`, safe while the service runs (WAL readers
//! never block the writer).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

pub use super::db::Stats;
use super::db::{self, Db};
use super::{StoreError, DB_FILE};

fn open(dir: &Path) -> Result<Db, StoreError> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::Missing(path));
    }
    match Db::open_existing(&path) {
        Ok(Some(db)) => Ok(db),
        Ok(None) => Err(StoreError::Missing(path)),
        Err(source) => Err(StoreError::Open { path, source }),
    }
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

pub fn stats(dir: &Path) -> Result<Stats, StoreError> {
    Ok(open(dir)?.stats()?)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Writes every buffered message as one JSON object per line, oldest first. Returns the count.
pub fn export(dir: &Path, out: &mut dyn Write) -> Result<u64, StoreError> {
    let db = open(dir)?;
    let mut n = 0;
    let mut io_error = None;
    db::each_row(db.conn(), |r| {
        let mut obj = serde_json::json!({
            "id": r.id,
            "topic": r.topic,
            "qos": r.qos,
            "retain": r.retain,
            "class": r.class.as_str(),
            "device": r.device,
            "created": rfc3339(r.created_ms),
        });
        match String::from_utf8(r.payload) {
            Ok(text) => obj["payload"] = serde_json::Value::String(text),
            Err(e) => {
                let hex: String = e.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                obj["payload_hex"] = serde_json::Value::String(hex);
            }
        }
        match writeln!(out, "{obj}") {
            Ok(()) => {
                n += 1;
                true
            }
            Err(e) => {
                io_error = Some(e);
                false
            }
        }
    })?;
    match io_error {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(StoreError::Io(e)),
        _ => Ok(n),
    }
}

/// Human-readable stats, as `edgegate buffer stats` prints them.
pub fn describe(dir: &Path, s: &Stats, now_ms: i64) -> String {
    let mut out = format!(
        "buffer {}\nmessages: {} ({} bytes)\n",
        db_path(dir).display(),
        s.rows,
        s.bytes
    );
    match s.oldest_ms {
        Some(ms) => {
            let age = Duration::from_millis((now_ms - ms).max(0) as u64 / 1000 * 1000);
            out += &format!(
                "oldest:   {} ({} ago)\n",
                rfc3339(ms),
                humantime::format_duration(age)
            );
        }
        None => out += "oldest:   -\n",
    }
    if s.drops.is_empty() {
        out += "dropped:  none\n";
    } else {
        let total: u64 = s.drops.iter().map(|d| d.2).sum();
        out += &format!("dropped:  {total}\n");
        for (reason, device, n) in &s.drops {
            let device = if device.is_empty() { "-" } else { device };
            out += &format!("  {reason:<10} {device:<24} {n}\n");
        }
    }
    if let Some(r) = &s.run {
        // The card's load: what the gateway wrote since it started, and what write-behind
        // spared it (acknowledged upstream before the commit that would have written it).
        out += &format!(
            "run:      since {} (these counts as of {}; kept at least every 90 s)\n\
             written:  {} messages in {} commits; {} acknowledged before they needed writing\n\
             disk:     {} bytes written by the gateway process\n",
            rfc3339(r.since_ms),
            rfc3339(r.last_commit_ms),
            r.written,
            r.commits,
            r.elided,
            r.disk_bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_the_gateway_is_still_creating_is_left_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        // What the gateway's first moment leaves: a file, no schema yet.
        rusqlite::Connection::open(&path).unwrap();
        assert!(matches!(stats(dir.path()), Err(StoreError::Missing(_))));
        let mut out = Vec::new();
        assert!(matches!(
            export(dir.path(), &mut out),
            Err(StoreError::Missing(_))
        ));
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!((version, tables), (0, 0), "the reader created nothing");
    }
}

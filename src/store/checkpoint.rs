//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, so that one
//! commit also copies the whole WAL into the database and fsyncs it: tens of milliseconds during
//! which nothing new is committed, and live readings wait. Here the writer's commit only notes
//! the WAL's size; a passive checkpoint from a second connection does the copying beside it.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Duration;

use rusqlite::Connection;

/// WAL frames past which a checkpoint runs: SQLite's own default threshold.
const WAL_FRAMES: i32 = 1000;

/// Replaces `conn`'s automatic checkpoints with a signal to [`run`].
pub(super) fn hand_off(conn: &mut Connection) -> rusqlite::Result<Receiver<()>> {
    let (tx, rx) = sync_channel(1);
    conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames| {
        if frames >= WAL_FRAMES {
            // Full means a checkpoint is already asked for.
            let _ = tx.try_send(());
        }
        Ok(())
    }))?;
    Ok(rx)
}

/// Checkpoints `db` whenever asked, until the writer's connection (holding the sender) closes.
pub(super) fn run(db: &Path, asked: Receiver<()>) {
    let conn = match Connection::open(db) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("buffer checkpoints cannot start: {e}");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    while asked.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("buffer checkpoint failed: {e}");
        }
    }
}

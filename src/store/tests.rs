use super::*;
use std::time::Duration;

fn msg(i: u32) -> Outgoing {
    Outgoing {
        topic: format!("s/g/d{}/temperature", i % 3),
        payload: Bytes::from(format!("{{\"seq\":{i}}}")),
        qos: 1,
        retain: false,
        class: Class::Telemetry,
        device: format!("d{}", i % 3),
        sample: None,
    }
}

fn alarm(i: u32) -> Outgoing {
    Outgoing {
        topic: format!("s/g/d{}/status", i % 3),
        payload: Bytes::from(format!("stale {i}")),
        class: Class::Alarm,
        ..msg(i)
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, Duration::from_millis(5), Caps::NONE).unwrap()
}

fn seqs(rows: &[Row]) -> Vec<u32> {
    rows.iter()
        .filter(|r| r.class == Class::Telemetry)
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            v["seq"].as_u64().unwrap() as u32
        })
        .collect()
}

#[tokio::test]
async fn rows_become_visible_only_after_the_commit_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(300), Caps::NONE).unwrap();
    let mut committed = store.committed();
    store.enqueue(msg(1)).await.unwrap();
    store.enqueue(msg(2)).await.unwrap();
    assert!(
        store.fetch_after(0, 10).await.unwrap().is_empty(),
        "not committed yet"
    );
    tokio::time::timeout(Duration::from_secs(2), committed.changed())
        .await
        .unwrap()
        .unwrap();
    let rows = store.fetch_after(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].payload, b"{\"seq\":1}");
    assert_eq!(*committed.borrow(), rows[1].id);
    store.close().await;
}

#[tokio::test]
async fn enqueue_then_fires_with_the_commit_that_took_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(10), Caps::NONE).unwrap();
    let (done, mut fired) = tokio::sync::oneshot::channel();
    store.enqueue_then(msg(1), Some(done)).await.unwrap();
    store.enqueue(msg(2)).await.unwrap();
    // Both sit in the batch until the interval (10 s) or a flush commits it.
    assert!(store.fetch_after(0, 10).await.unwrap().is_empty());
    assert!(fired.try_recv().is_err(), "fired before the commit");
    store.flush().await.unwrap();
    assert_eq!(fired.try_recv(), Ok(()));
    assert_eq!(seqs(&store.fetch_after(0, 10).await.unwrap()), [1, 2]);
    store.close().await;
}

#[tokio::test]
async fn ack_deletes_and_order_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..100 {
        store.enqueue(msg(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    let rows = store.fetch_after(0, 1000).await.unwrap();
    assert_eq!(rows.len(), 100);
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    for r in &rows[..60] {
        store.ack(r.id).await.unwrap();
    }
    store.flush().await.unwrap();
    let left = store.fetch_after(0, 1000).await.unwrap();
    assert_eq!(left.len(), 40);
    assert_eq!(left[0].payload, b"{\"seq\":60}");
    let after = store.fetch_after(left[9].id, 5).await.unwrap();
    assert_eq!(after[0].payload, b"{\"seq\":70}");
    assert_eq!(after.len(), 5);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.rows, 40);
    assert!(stats.oldest_ms.is_some());
    store.close().await;
}

#[tokio::test]
async fn seq_and_rows_survive_reopen_and_ids_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.next_seq(), 1);
    assert_eq!(store.next_seq(), 2);
    store.enqueue(msg(1)).await.unwrap();
    store.flush().await.unwrap();
    let rows = store.fetch_after(0, 10).await.unwrap();
    store.ack(rows[0].id).await.unwrap();
    store.close().await;

    let store = open(dir.path());
    let first = store.next_seq();
    assert!(
        first >= 3,
        "sequence goes on after a restart, maybe skipping forward"
    );
    assert_eq!(store.first_seq(), first);
    assert!(store.fetch_after(0, 10).await.unwrap().is_empty());
    store.enqueue(msg(2)).await.unwrap();
    store.flush().await.unwrap();
    let rows2 = store.fetch_after(0, 10).await.unwrap();
    assert!(
        rows2[0].id > rows[0].id,
        "an emptied table must not reuse ids"
    );
    store.close().await;
}

#[tokio::test]
async fn database_is_wal_with_full_sync_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.enqueue(msg(1)).await.unwrap();
    store.flush().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    let page: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(
        page, 1024,
        "new files use small pages (fewer bytes per commit)"
    );
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "flushed rows are visible to another connection");
    store.close().await;
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let err = match Store::open(
        Path::new("/proc/edgegate-no-such-dir"),
        Duration::from_millis(5),
        Caps::NONE,
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a store under /proc"),
    };
    assert!(
        err.contains("cannot create data directory /proc/edgegate-no-such-dir"),
        "{err}"
    );
}

fn version_1_file(dir: &Path, rows_sql: &str) {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.execute_batch(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
             payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
             created_ms INTEGER NOT NULL);
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    conn.execute_batch(rows_sql).unwrap();
}

#[tokio::test]
async fn a_version_1_file_is_migrated_without_losing_rows() {
    let dir = tempfile::tempdir().unwrap();
    version_1_file(
        dir.path(),
        "INSERT INTO outbox (topic, payload, qos, retain, created_ms)
                 VALUES ('s/g/d1/temperature', CAST('{\"seq\":41}' AS BLOB), 1, 0, 1);
             INSERT INTO meta VALUES ('next_seq', 42);",
    );
    let store = open(dir.path());
    assert_eq!(store.next_seq(), 42);
    let rows = store.fetch_after(0, 10).await.unwrap();
    assert_eq!(seqs(&rows), vec![41]);
    assert_eq!(rows[0].class, Class::Telemetry);
    store.close().await;
}

#[tokio::test]
async fn a_damaged_file_is_moved_aside_never_deleted_and_seq_jumps_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let junk = b"this is not an SQLite database, it is what a bad SD card left behind".repeat(100);
    std::fs::write(dir.path().join(DB_FILE), &junk).unwrap();
    let store = open(dir.path());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("edgegate.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        junk,
        "kept as it was"
    );
    assert!(
        store.next_seq() > 1_000_000_000_000_000,
        "seq must jump past the lost counter"
    );
    store.enqueue(msg(1)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        store.fetch_after(0, 10).await.unwrap().len(),
        1,
        "the new file works"
    );
    store.close().await;
}

#[test]
fn memory_queue_sheds_the_oldest_telemetry_and_keeps_alarms() {
    let mut q: Vec<Queued> = (0..10)
        .map(|i| Queued {
            id: i as i64,
            created_ms: 0,
            at: std::time::Instant::now(),
            msg: if i % 4 == 0 { alarm(i) } else { msg(i) },
            committed: (i == 1).then(|| tokio::sync::oneshot::channel().0),
        })
        .collect();
    let mut drops = db::Drops::new();
    let waiters = shed_oldest_telemetry(&mut q, 6, &mut drops);
    assert_eq!(waiters.len(), 1, "the shed message's waiter is handed back");
    let kept: Vec<String> = q
        .iter()
        .map(|q| String::from_utf8_lossy(&q.msg.payload).into_owned())
        .collect();
    assert_eq!(
        kept,
        [
            "stale 0",
            "stale 4",
            "{\"seq\":6}",
            "{\"seq\":7}",
            "stale 8",
            "{\"seq\":9}"
        ]
    );
    assert_eq!(drops.values().sum::<u64>(), 4);
    assert!(drops.keys().all(|(r, _)| *r == DROP_MEMORY_FULL));
}

#[tokio::test]
async fn state_survives_reopen_with_the_newest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.state_put("bus", "retained/a", b"1".to_vec());
    store.state_put("bus", "retained/a", b"2".to_vec());
    store.state_put("bus", "retained/b", b"x".to_vec());
    store.state_put("mqttsn", "client/n1", b"n".to_vec());
    store.state_put("bus", "gone", b"soon".to_vec());
    store.state_delete("bus", "gone");
    // Read-your-writes, before any commit.
    let before = store.state_load("bus").await.unwrap();
    assert_eq!(
        before,
        vec![
            ("retained/a".to_string(), b"2".to_vec()),
            ("retained/b".to_string(), b"x".to_vec())
        ]
    );
    store.close().await;

    let store = open(dir.path());
    assert_eq!(store.state_load("bus").await.unwrap(), before);
    assert_eq!(
        store.state_load("mqttsn").await.unwrap(),
        vec![("client/n1".to_string(), b"n".to_vec())]
    );
    store.state_delete("bus", "retained/a");
    store.close().await;

    let store = open(dir.path());
    let keys: Vec<String> = store
        .state_load("bus")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec!["retained/b"]);
    store.close().await;
}

#[tokio::test]
async fn state_alone_is_committed_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.state_put("bus", "k", b"v".to_vec());
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM state WHERE ns = 'bus'", [], |r| {
                r.get(0)
            })
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "state never committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.close().await;
}

#[tokio::test]
async fn migrating_off_autoincrement_keeps_ids_going_forward_after_an_emptied_table() {
    let dir = tempfile::tempdir().unwrap();
    version_1_file(
        dir.path(),
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 41)
                 INSERT INTO outbox (topic, payload, qos, retain, created_ms)
                 SELECT 't', CAST('{}' AS BLOB), 1, 0, 1 FROM n;
             DELETE FROM outbox WHERE id < 41;",
    );
    let store = open(dir.path());
    store.enqueue(msg(7)).await.unwrap();
    store.flush().await.unwrap();
    let ids: Vec<i64> = store
        .fetch_after(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![41, 42], "the kept row, then the next id after it");
    store.ack(41).await.unwrap();
    store.ack(42).await.unwrap();
    store.close().await;

    // Emptied, reopened: still no id is reused.
    let store = open(dir.path());
    store.enqueue(msg(8)).await.unwrap();
    store.flush().await.unwrap();
    let rows = store.fetch_after(0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].id > 42, "{rows:?}");
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let autoinc: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE sql LIKE '%AUTOINCREMENT%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(autoinc, 0);
    store.close().await;
}

#[tokio::test]
async fn alarms_are_read_through_their_index_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..50 {
        let m = if i % 10 == 3 { alarm(i) } else { msg(i) };
        store.enqueue(m).await.unwrap();
    }
    store.flush().await.unwrap();
    let alarms = store
        .fetch_range(0, 50, Some(Class::Alarm), 100)
        .await
        .unwrap();
    assert_eq!(
        alarms.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![4, 14, 24, 34, 44]
    );
    let telemetry = store
        .fetch_range(0, 50, Some(Class::Telemetry), 100)
        .await
        .unwrap();
    assert_eq!(telemetry.len(), 45);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE id > 0 AND id <= 50 AND class = 1 ORDER BY id",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("outbox_alarms"), "{plan}");
    store.close().await;
}

#[tokio::test]
async fn checkpoints_keep_the_wal_bounded_without_the_writer_doing_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let big = Bytes::from(vec![b'x'; 1000]);
    // ~60 commits of ~100 pages each: 6000+ WAL frames if nothing checkpointed.
    for c in 0..60u32 {
        for i in 0..100 {
            let mut m = msg(c * 100 + i);
            m.payload = big.clone();
            store.enqueue(m).await.unwrap();
        }
        store.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    let size = std::fs::metadata(&wal).unwrap().len();
    assert!(
        size < 3_000_000,
        "WAL grew to {size} bytes: checkpoints did not run"
    );
    assert_eq!(store.stats().await.unwrap().rows, 6000);
    store.close().await;
}

#[tokio::test]
async fn a_new_key_deleted_before_the_commit_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let w = store.state_writer();
    w.put_new("bus", "q/1".into(), b"a".to_vec());
    w.put("bus", "q/1".into(), b"b".to_vec()); // still never committed
    w.put_new("bus", "q/2".into(), b"c".to_vec());
    w.delete("bus", "q/1".into());
    assert_eq!(store.state.snapshot().len(), 1, "only q/2 is pending");
    store.flush().await.unwrap();
    // Committed now: deleting it must reach the file.
    w.delete("bus", "q/2".into());
    assert_eq!(store.state.snapshot().len(), 1);
    store.close().await;
    let store = open(dir.path());
    assert!(store.state_load("bus").await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn the_time_of_the_last_commit_is_known_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.previous_commit(), None);
    store.state_put("t", "k", vec![1]);
    let before = std::time::SystemTime::now();
    store.flush().await.unwrap();
    let after = std::time::SystemTime::now();
    store.close().await;
    let store = open(dir.path());
    let at = store.previous_commit().expect("recorded");
    // Milliseconds: `before` may be up to one later.
    assert!(
        at + Duration::from_millis(1) >= before && at <= after,
        "{at:?}"
    );
}

mod caps;

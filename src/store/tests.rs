use super::*;
use std::time::Duration;

fn msg(i: u32) -> Outgoing {
    Outgoing {
        topic: format!("s/g/d{}/temperature", i % 3),
        payload: Bytes::from(format!("{{\"seq\":{i}}}")),
        qos: 1,
        retain: false,
    }
}

#[tokio::test]
async fn rows_become_visible_only_after_the_commit_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(300)).unwrap();
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
async fn ack_deletes_and_order_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(5)).unwrap();
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
    let store = Store::open(dir.path(), Duration::from_millis(5)).unwrap();
    assert_eq!(store.next_seq(), 1);
    assert_eq!(store.next_seq(), 2);
    store.enqueue(msg(1)).await.unwrap();
    store.flush().await.unwrap();
    let rows = store.fetch_after(0, 10).await.unwrap();
    store.ack(rows[0].id).await.unwrap();
    store.close().await;

    let store = Store::open(dir.path(), Duration::from_millis(5)).unwrap();
    assert_eq!(store.next_seq(), 3, "sequence continues after a restart");
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
    let store = Store::open(dir.path(), Duration::from_millis(5)).unwrap();
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
    assert_eq!(version, 1);
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
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a store under /proc"),
    };
    assert!(
        err.contains("cannot create data directory /proc/edgegate-no-such-dir"),
        "{err}"
    );
}

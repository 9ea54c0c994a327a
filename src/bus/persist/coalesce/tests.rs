use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::bus::persist::{load, NS_RETAINED};
use crate::bus::router::Router;
use crate::store::{Caps, Store};

fn retained(topic: &str, payload: String) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from(payload),
        qos: 1,
        retain: true,
        props: None,
        origin: None,
    }
}

/// A router on what `store` holds, coalescing its own retained copies when `coalesce`.
async fn router(store: &Store, coalesce: bool) -> Router {
    let mut r = Router::new(8, 3);
    let (p, restored) = load(store.clone(), || r.new_queue()).await.unwrap();
    r.restore(restored);
    if coalesce {
        p.coalesce_retained();
    }
    r.persist = Some(p);
    r
}

fn persist(r: &Router) -> &Persist {
    r.persist.as_ref().unwrap()
}

/// Counts every row SQLite writes into the store's state table, per key, from now on.
fn count_writes(store: &Store) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    conn.execute_batch(
        "CREATE TABLE writes (ns TEXT, key TEXT);
         CREATE TRIGGER writes_ins AFTER INSERT ON state
           BEGIN INSERT INTO writes VALUES (new.ns, new.key); END;
         CREATE TRIGGER writes_upd AFTER UPDATE ON state
           BEGIN INSERT INTO writes VALUES (new.ns, new.key); END;",
    )
    .unwrap();
    conn
}

fn writes(conn: &rusqlite::Connection, key: &str) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM writes WHERE ns = ?1 AND key = ?2",
        [NS_RETAINED, key],
        |r| r.get(0),
    )
    .unwrap()
}

/// What a restart finds retained, as (topic, payload).
async fn on_disk(store: &Store) -> Vec<(String, String)> {
    let r = router(store, false).await;
    let (_, _rx, pending) = r.subscribe_inproc(vec!["#".into()], 8, true);
    pending
        .into_iter()
        .map(|m| (m.topic, String::from_utf8(m.payload.to_vec()).unwrap()))
        .collect()
}

#[tokio::test]
async fn own_readings_are_written_once_per_flush_and_a_clients_at_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(5), Caps::NONE).unwrap();
    let r = router(&store, true).await;
    let conn = count_writes(&store);
    for i in 0..300 {
        let topic = format!("s/g/d{}/t", i % 3);
        r.route_own(retained(&topic, format!("{i}"))).await;
        if i % 50 == 0 {
            store.flush().await.unwrap(); // commits go on meanwhile
        }
    }
    // One pending copy per topic, however many readings.
    assert_eq!(persist(&r).pending_retained(), 3);
    store.flush().await.unwrap();
    assert_eq!(writes(&conn, "s/g/d0/t"), 0, "written before its flush");

    // A client's retained message goes with the next commit, and its topic's older reading
    // never overwrites it.
    r.route(retained("s/g/d0/t", "from a client".into())).await;
    store.flush().await.unwrap();
    assert_eq!(writes(&conn, "s/g/d0/t"), 1);
    assert_eq!(persist(&r).flush_retained(), 2);
    store.flush().await.unwrap();
    for topic in ["s/g/d0/t", "s/g/d1/t", "s/g/d2/t"] {
        assert_eq!(writes(&conn, topic), 1, "{topic}");
    }
    // Nothing changed since: the next flush writes nothing.
    assert_eq!(persist(&r).flush_retained(), 0);
    store.flush().await.unwrap();
    assert_eq!(writes(&conn, "s/g/d1/t"), 1);
    drop(r);
    assert_eq!(
        on_disk(&store).await,
        [
            ("s/g/d0/t".into(), "from a client".into()),
            ("s/g/d1/t".into(), "298".into()),
            ("s/g/d2/t".into(), "299".into()),
        ]
    );
}

#[tokio::test]
async fn a_clean_stop_writes_the_pending_copies_and_later_ones_go_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(5), Caps::NONE).unwrap();
    let r = router(&store, true).await;
    r.route_own(retained("a", "1".into())).await;
    r.route_own(retained("b", "2".into())).await;
    r.route_own(retained("gone", "3".into())).await;
    r.route_own(retained("gone", String::new())).await; // a deletion: nothing pending for it
    assert_eq!(persist(&r).pending_retained(), 2);
    persist(&r).stop_coalescing();
    r.route_own(retained("c", "4".into())).await;
    assert_eq!(persist(&r).pending_retained(), 0);
    store.flush().await.unwrap();
    drop(r);
    assert_eq!(
        on_disk(&store).await,
        [
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("c".into(), "4".into())
        ]
    );
}

/// `buffer.retained_flush: 0`: every change goes with the next commit, as before coalescing.
#[tokio::test]
async fn without_coalescing_own_readings_are_written_with_each_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(5), Caps::NONE).unwrap();
    let r = router(&store, false).await;
    let conn = count_writes(&store);
    for i in 0..3 {
        r.route_own(retained("t", format!("{i}"))).await;
        store.flush().await.unwrap();
    }
    assert_eq!(writes(&conn, "t"), 3);
}

//! The caps (`max_rows`, `max_bytes`, `max_age`): what they drop, what they keep, what they count.

use super::*;

fn caps(max_rows: u64, max_bytes: u64) -> Caps {
    Caps {
        max_rows,
        max_bytes,
        ..Caps::NONE
    }
}

#[tokio::test]
async fn row_cap_drops_the_oldest_telemetry_keeps_alarms_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(5), caps(100, u64::MAX)).unwrap();
    for i in 0..150 {
        store.enqueue(msg(i)).await.unwrap();
        if i % 15 == 0 {
            store.enqueue(alarm(i)).await.unwrap();
        }
    }
    store.flush().await.unwrap();
    let rows = store.fetch_after(0, 1000).await.unwrap();
    assert_eq!(rows.len(), 100);
    assert_eq!(
        rows.iter().filter(|r| r.class == Class::Alarm).count(),
        10,
        "alarms stay"
    );
    assert_eq!(
        seqs(&rows),
        (60..150).collect::<Vec<_>>(),
        "the oldest telemetry went"
    );
    let stats = store.stats().await.unwrap();
    let dropped: u64 = stats.drops.iter().map(|d| d.2).sum();
    assert_eq!(dropped, 60);
    assert_eq!(
        stats.drops,
        vec![
            ("max_rows".to_string(), "d0".to_string(), 20),
            ("max_rows".to_string(), "d1".to_string(), 20),
            ("max_rows".to_string(), "d2".to_string(), 20),
        ]
    );
    store.close().await;
    // Counters are kept in the file.
    let store = open(dir.path());
    assert_eq!(store.stats().await.unwrap().drops.len(), 3);
    store.close().await;
}

#[tokio::test]
async fn byte_cap_keeps_the_buffer_under_its_size() {
    let dir = tempfile::tempdir().unwrap();
    // Each message is 20 topic bytes + 10..12 payload bytes.
    let store = Store::open(dir.path(), Duration::from_millis(5), caps(u64::MAX, 3_000)).unwrap();
    for i in 0..1_000 {
        store.enqueue(msg(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    let stats = store.stats().await.unwrap();
    assert!(stats.bytes <= 3_000, "{stats:?}");
    assert!(
        stats.bytes > 2_800,
        "dropped far more than needed: {stats:?}"
    );
    let rows = store.fetch_after(0, 10_000).await.unwrap();
    assert_eq!(*seqs(&rows).last().unwrap(), 999, "the newest stays");
    let dropped: u64 = stats.drops.iter().map(|d| d.2).sum();
    assert_eq!(dropped + rows.len() as u64, 1_000);
    assert!(stats.drops.iter().all(|d| d.0 == "max_bytes"));
    store.close().await;
}

#[tokio::test]
async fn alarms_are_kept_even_past_the_caps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(5), caps(5, u64::MAX)).unwrap();
    for i in 0..20 {
        store.enqueue(alarm(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(store.fetch_after(0, 100).await.unwrap().len(), 20);
    assert!(store.stats().await.unwrap().drops.is_empty());
    store.close().await;
}

#[tokio::test]
async fn age_cap_drops_telemetry_older_than_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let age = Caps {
        max_age: Some(Duration::from_secs(3600)),
        ..Caps::NONE
    };
    let store = Store::open(dir.path(), Duration::from_millis(5), age).unwrap();
    for i in 0..30 {
        store.enqueue(msg(i)).await.unwrap();
    }
    store.enqueue(alarm(99)).await.unwrap();
    store.flush().await.unwrap();
    // Age the first 20 telemetry rows and the alarm by two hours, from a second connection.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE outbox SET created_ms = created_ms - 7200000 WHERE id <= 20 OR class = 1",
        [],
    )
    .unwrap();
    store.enqueue(msg(30)).await.unwrap();
    store.flush().await.unwrap();
    let rows = store.fetch_after(0, 100).await.unwrap();
    assert_eq!(seqs(&rows), (20..31).collect::<Vec<_>>());
    assert_eq!(rows.iter().filter(|r| r.class == Class::Alarm).count(), 1);
    let dropped: u64 = store.stats().await.unwrap().drops.iter().map(|d| d.2).sum();
    assert_eq!(dropped, 20);
    store.close().await;
}

/// A database as schema version 1 made it, then `rows_sql` run on it.
#[tokio::test]
async fn byte_cap_counts_bytes_of_non_ascii_topics_so_acked_rows_free_what_they_took() {
    let dir = tempfile::tempdir().unwrap();
    // 219 bytes, 119 characters: what an on-site client or an MQTT-SN device name can send.
    let topic = format!("site/gw/{}/temperatur", "ä".repeat(100));
    assert_eq!((topic.len(), topic.chars().count()), (219, 119));
    let one = |i: u32| Outgoing {
        topic: topic.clone(),
        ..msg(i)
    };
    let store = Store::open(dir.path(), Duration::from_millis(5), caps(u64::MAX, 5_000)).unwrap();
    // Delivered one at a time: the buffer never holds more than one row.
    for i in 0..200 {
        store.enqueue(one(i)).await.unwrap();
        store.flush().await.unwrap();
        let rows = store.fetch_after(0, 10).await.unwrap();
        assert_eq!(
            rows.len(),
            1,
            "reading {i} was dropped from an empty buffer"
        );
        store.ack(rows[0].id).await.unwrap();
        store.flush().await.unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert!(stats.drops.is_empty(), "{stats:?}");
    store.enqueue(one(200)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().bytes,
        (topic.len() + "{\"seq\":200}".len()) as u64,
        "a row counts for its size in bytes"
    );
    store.close().await;
}

#[tokio::test]
async fn caps_leave_rows_the_uplink_holds_so_delivered_buffered_and_dropped_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(5), caps(100, u64::MAX)).unwrap();
    for i in 0..100 {
        store.enqueue(msg(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    // The uplink reads ahead (as its lanes do) and sends from what it read.
    let read_ahead = store
        .fetch_range(0, i64::MAX, Some(Class::Telemetry), 500)
        .await
        .unwrap();
    assert_eq!(read_ahead.len(), 100);
    for r in &read_ahead[..50] {
        store.ack(r.id).await.unwrap();
    }
    // Past the cap while the rest of the read-ahead is still on its way.
    for i in 100..300 {
        store.enqueue(msg(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    for r in &read_ahead[50..] {
        store.ack(r.id).await.unwrap();
    }
    store.flush().await.unwrap();
    let delivered = read_ahead.len() as u64;
    let stats = store.stats().await.unwrap();
    let dropped: u64 = stats.drops.iter().map(|d| d.2).sum();
    assert_eq!(
        delivered + stats.rows + dropped,
        300,
        "delivered {delivered}, buffered {}, counted as dropped {dropped}",
        stats.rows
    );
    assert!(stats.rows <= 100, "{stats:?}");
    let left = seqs(&store.fetch_after(0, 1000).await.unwrap());
    assert_eq!(left, (250..300).collect::<Vec<_>>(), "the newest stay");
    store.close().await;
}

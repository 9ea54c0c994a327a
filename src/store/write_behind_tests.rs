//! Write-behind: what is acknowledged before its commit is never written, what is not is
//! written and deleted on its acknowledgement, and ids and sequence numbers never repeat.

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

/// Commits only when told to (`flush`) or at close.
fn open_slow(dir: &Path) -> Store {
    Store::open(dir, Duration::from_secs(3600), Caps::NONE).unwrap()
}

/// Everything handed over so far (the writer has taken it once it answers a ping).
async fn all(store: &Store) -> Vec<Row> {
    store.ping().await.unwrap();
    let upto = *store.available().borrow();
    store.fetch_range(0, upto, None, 1000).await.unwrap()
}

fn ids(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

/// What a power cut would leave: the files as they are now, opened by a new run.
fn copy_files(from: &Path, to: &Path) {
    for suffix in ["", "-wal"] {
        let name = format!("{DB_FILE}{suffix}");
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_message_is_readable_at_once_and_never_written_if_acknowledged_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_slow(dir.path());
    let before = store.write_stats();
    let (tx, mut committed) = tokio::sync::oneshot::channel();
    store.enqueue_then(msg(1), Some(tx)).await.unwrap();
    let rows = all(&store).await;
    assert_eq!(rows.len(), 1, "handed to the uplink before any commit");
    assert!(
        store.fetch_after(0, 10).await.unwrap().is_empty(),
        "not written"
    );
    assert!(committed.try_recv().is_err());
    let mut settled = store.acks_committed();
    store.ack(rows[0].id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut committed)
        .await
        .expect("the waiter is told when upstream acknowledged")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), settled.wait_for(|n| *n == 1))
        .await
        .expect("an acknowledgement of an unwritten row is settled at once")
        .unwrap();
    store.flush().await.unwrap();
    assert!(store.fetch_after(0, 10).await.unwrap().is_empty());
    assert!(all(&store).await.is_empty());
    let after = store.write_stats();
    assert_eq!(after.written - before.written, 0);
    assert_eq!(after.elided - before.elided, 1);
    store.close().await;
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn what_is_unacknowledged_at_commit_is_written_and_deleted_on_its_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_slow(dir.path());
    for i in 1..=3 {
        store.enqueue(msg(i)).await.unwrap();
    }
    let first = all(&store).await;
    store.ack(first[0].id).await.unwrap();
    store.flush().await.unwrap();
    let written = store.fetch_after(0, 10).await.unwrap();
    assert_eq!(
        ids(&written),
        ids(&first[1..]),
        "the acknowledged one was not written"
    );
    assert_eq!(store.write_stats().written, 2);
    assert_eq!(ids(&all(&store).await), ids(&first[1..]));

    // Written rows and new ones read together, in id order.
    store.enqueue(msg(4)).await.unwrap();
    let rows = all(&store).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));

    let mut settled = store.acks_committed();
    // A written row's acknowledgement waits for its deletion's commit, and so does every one
    // after it (the count is a prefix): the row could still be read back until then.
    store.ack(rows[0].id).await.unwrap();
    store.ack(rows[2].id).await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(*settled.borrow_and_update(), 1);
    store.flush().await.unwrap();
    assert_eq!(*settled.borrow_and_update(), 3);
    assert_eq!(ids(&all(&store).await), [rows[1].id]);
    store.close().await;
}

#[tokio::test]
async fn after_a_power_cut_ids_and_seqs_of_the_lost_batch_are_never_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_slow(dir.path());
    let mut seqs = Vec::new();
    for i in 1..=5 {
        seqs.push(store.next_seq());
        store.enqueue(msg(i)).await.unwrap();
    }
    let handed = all(&store).await;
    // Two acknowledged (never written), three waiting: a power cut now loses the three.
    store.ack(handed[0].id).await.unwrap();
    store.ack(handed[1].id).await.unwrap();
    store.ping().await.unwrap();
    let cut = tempfile::tempdir().unwrap();
    copy_files(dir.path(), cut.path());
    store.close().await;

    let next = open_slow(cut.path());
    assert!(
        next.fetch_after(0, 10).await.unwrap().is_empty(),
        "nothing was committed"
    );
    next.enqueue(msg(9)).await.unwrap();
    let id = all(&next).await[0].id;
    let max_handed = handed.iter().map(|r| r.id).max().unwrap();
    assert!(id > max_handed, "id {id} after {max_handed}");
    let seq = next.next_seq();
    assert!(
        seq > *seqs.iter().max().unwrap(),
        "seq {seq} after {seqs:?}"
    );
    assert_eq!(next.first_seq(), seq);
    next.close().await;
}

#[tokio::test]
async fn the_sequence_reservation_is_raised_before_it_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_slow(dir.path());
    let mut last = 0;
    for _ in 0..RESERVE_BLOCK * 3 / 4 {
        last = store.next_seq();
    }
    // The writer was nudged once half the block was used; give it the turn.
    store.ping().await.unwrap();
    store.ping().await.unwrap();
    let cut = tempfile::tempdir().unwrap();
    copy_files(dir.path(), cut.path());
    let next = open_slow(cut.path());
    assert!(next.first_seq() > last, "{} after {last}", next.first_seq());
    next.close().await;
    store.close().await;
}

#[tokio::test]
async fn a_stream_acknowledged_as_it_goes_costs_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    // Each message is acknowledged before its commit interval ends (how soon after its arrival
    // that happens on a real link is tests/outbox/write_behind.rs's matter).
    let store = open_slow(dir.path());
    let before = store.write_stats();
    for i in 1..=200 {
        store.enqueue(msg(i)).await.unwrap();
        let rows = all(&store).await;
        store.ack_many(ids(&rows)).await.unwrap();
    }
    store.flush().await.unwrap();
    let after = store.write_stats();
    assert_eq!(after.written - before.written, 0);
    assert_eq!(after.elided - before.elided, 200);
    assert_eq!(after.commits, before.commits, "{before:?} -> {after:?}");
    store.close().await;
}

#[tokio::test]
async fn a_qos_2_message_is_written_before_it_or_anything_after_it_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    // Commits every 10 s: the QoS 2 message asks for its own at once.
    let store = Store::open(dir.path(), Duration::from_secs(10), Caps::NONE).unwrap();
    store.enqueue(msg(1)).await.unwrap();
    store.enqueue(Outgoing { qos: 2, ..msg(2) }).await.unwrap();
    store.enqueue(msg(3)).await.unwrap();
    let mut committed = store.committed();
    tokio::time::timeout(Duration::from_secs(5), committed.wait_for(|id| *id > 0))
        .await
        .expect("a QoS 2 message is committed without waiting for the interval")
        .unwrap();
    let written = store.fetch_after(0, 10).await.unwrap();
    assert_eq!(
        written.iter().map(|r| r.qos).take(2).collect::<Vec<_>>(),
        [1, 2],
        "it and what came before it are on disk"
    );
    // Once it is written, all is readable, in order.
    let rows = all(&store).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].qos, 1);
    store.close().await;
}

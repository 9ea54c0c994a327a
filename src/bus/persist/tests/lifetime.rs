//! Session expiry and delayed wills across restarts.

use super::*;

async fn connect_v5(r: &Router, id: &str, expiry: u32, present: bool) -> Attached {
    match r.connect(Some(id.into()), false, expiry).await {
        ConnectOutcome::Accepted(a) => {
            assert_eq!(a.session_present, present, "session present for {id}");
            a
        }
        ConnectOutcome::Refused(code) => panic!("refused with {code}"),
    }
}

async fn session_record(store: &Store, client: &str) -> SessionRecord {
    let entries = store.state_load(NS_SESSION).await.unwrap();
    let (_, value) = entries.into_iter().find(|(k, _)| k == client).unwrap();
    decode_session(&value).unwrap()
}

#[tokio::test]
async fn the_expiry_interval_and_disconnection_time_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let a = connect_v5(&r, "dev", 100, false).await;
    let rec = session_record(&store, "dev").await;
    assert_eq!((rec.expiry, rec.disconnected_at), (100, 0));
    let before = rec::unix_now();
    r.detach("dev", a.conn_id, ended(SessionState::default()));
    r.route(msg("t", b"x", 1, false)).await;
    let rec = session_record(&store, "dev").await;
    assert_eq!(rec.expiry, 100);
    assert!((before..=rec::unix_now()).contains(&rec.disconnected_at));
    drop(r);

    let r = restart(&store).await;
    let ended_at = std::time::UNIX_EPOCH + Duration::from_secs(rec.disconnected_at);
    // Not due before its interval has passed since the disconnection, due after.
    let (_, next) = r.sweep(ended_at + Duration::from_secs(99));
    assert_eq!(next, Some(ended_at + Duration::from_secs(100)));
    assert!(r.has_session("dev"));
    r.sweep(ended_at + Duration::from_secs(100));
    assert!(!r.has_session("dev"));
    assert!(keys(&store, NS_SESSION).await.is_empty());
    assert!(keys(&store, NS_QUEUE).await.is_empty());
    assert_eq!(r.stats.snapshot().expired, 1);
}

#[tokio::test]
async fn a_resumed_session_is_stored_as_connected_with_its_new_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let a = connect_v5(&r, "dev", 100, false).await;
    r.detach("dev", a.conn_id, ended(SessionState::default()));
    let _a = connect_v5(&r, "dev", 30, true).await;
    let rec = session_record(&store, "dev").await;
    assert_eq!((rec.expiry, rec.disconnected_at), (30, 0));
    // A crash now: the session's connection ends with that run, at its last commit, and
    // waits its interval from there, after this restart and the next.
    drop(r);
    store.flush().await.unwrap();
    let crash = std::time::SystemTime::now();
    store.close().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..2 {
        let store = open(dir.path());
        let r = restart(&store).await;
        let (_, next) = r.sweep(std::time::SystemTime::now());
        let next = next.unwrap();
        assert!(next > crash + Duration::from_secs(28) && next <= crash + Duration::from_secs(30));
        drop(r);
        store.close().await;
    }
}

#[tokio::test]
async fn a_session_that_expired_while_stopped_is_deleted_at_load_with_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = rec::unix_now();
    let record = |expiry, disconnected_at| {
        encode_session(&SessionRecord {
            expiry,
            disconnected_at,
            next_pid: 5,
            subs: vec![("t".into(), 1, 0)],
        })
    };
    // Gone 20 s with 10 s to live: expired. 100 s to live, or never: still there.
    store.state_put(NS_SESSION, "gone", record(10, now - 20));
    store.state_put(NS_SESSION, "kept", record(100, now - 20));
    store.state_put(
        NS_SESSION,
        "never",
        record(crate::bus::expiry::NEVER, now - 1_000_000),
    );
    for (seq, client) in [(1, "gone"), (2, "kept"), (3, "gone")] {
        let value = rec::encode_message(&msg("t", b"x", 1, false), Stage::Queued);
        store.state_put(NS_QUEUE, &queue_key(client, seq), value);
    }
    store.state_put(NS_QOS2_IN, &qos2_key("gone", 9), vec![rec::VERSION]);
    let r = restart(&store).await;
    assert_eq!(keys(&store, NS_SESSION).await, ["kept", "never"]);
    assert_eq!(keys(&store, NS_QUEUE).await, [queue_key("kept", 2)]);
    assert!(keys(&store, NS_QOS2_IN).await.is_empty());
    assert_eq!(r.stats.snapshot().expired, 1);
    assert!(!r.has_session("gone"));
    connect_v5(&r, "gone", 10, false).await;
    let kept = connect_v5(&r, "kept", 100, true).await;
    assert_eq!(topics(&kept.queue), ["t"]);
    connect_v5(&r, "never", crate::bus::expiry::NEVER, true).await;
}

/// Session "dev" (expiry `expiry`) connects and ends without DISCONNECT, its will on "w/dev"
/// waiting `delay` seconds; returns when it ended, as stored.
async fn leave_a_will(r: &Router, store: &Store, expiry: u32, delay: u32) -> std::time::SystemTime {
    let a = connect_v5(r, "dev", expiry, false).await;
    let props = MessageProps {
        expiry: Some(60),
        ..MessageProps::default()
    };
    let will = crate::bus::expiry::DelayedWill {
        msg: Message {
            props: Some(Arc::new(props)),
            ..msg("w/dev", b"gone", 1, true)
        },
        delay,
    };
    let end = Detach {
        will: Some(will),
        ..ended(SessionState::default())
    };
    assert_eq!(r.detach("dev", a.conn_id, end), None);
    assert_eq!(keys(store, NS_WILL).await, ["dev"]);
    let at = session_record(store, "dev").await.disconnected_at;
    std::time::UNIX_EPOCH + Duration::from_secs(at)
}

#[tokio::test]
async fn a_waiting_will_survives_a_restart_and_goes_out_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let ended_at = leave_a_will(&r, &store, 100, 30).await;
    drop(r);
    let r = restart(&store).await;
    let (wills, next) = r.sweep(ended_at + Duration::from_secs(29));
    assert!(wills.is_empty());
    assert_eq!(next, Some(ended_at + Duration::from_secs(30)));
    let (wills, _) = r.sweep(ended_at + Duration::from_secs(30));
    let got: Vec<_> = wills
        .iter()
        .map(|w| (w.topic.as_str(), w.qos, w.retain))
        .collect();
    assert_eq!(got, [("w/dev", 1, true)]);
    // Its message expiry starts at publication, whole.
    assert_eq!(wills[0].props.as_ref().and_then(|p| p.expiry), Some(60));
    assert!(keys(&store, NS_WILL).await.is_empty());
    // The session itself waits on for its own interval.
    assert!(r.has_session("dev"));
}

#[tokio::test]
async fn a_client_back_after_a_restart_cancels_its_stored_will() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let ended_at = leave_a_will(&r, &store, 100, 30).await;
    drop(r);
    let r = restart(&store).await;
    connect_v5(&r, "dev", 100, true).await;
    assert!(keys(&store, NS_WILL).await.is_empty());
    let (wills, _) = r.sweep(ended_at + Duration::from_secs(31));
    assert!(wills.is_empty());
    drop(r);
    // Nor does it come back with the next restart.
    let r = restart(&store).await;
    let (wills, _) = r.sweep(ended_at + Duration::from_secs(31));
    assert!(wills.is_empty());
}

#[tokio::test]
async fn the_will_of_a_session_that_expired_while_stopped_is_due_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    leave_a_will(&r, &store, 1, 3600).await;
    drop(r);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut r = Router::new(8, 3);
    let (p, restored) = load(store.clone(), || r.new_queue()).await.unwrap();
    let due = r.restore(restored);
    r.persist = Some(p);
    let got: Vec<_> = due.iter().map(|w| w.topic.as_str()).collect();
    assert_eq!(got, ["w/dev"]);
    assert!(!r.has_session("dev"));
    assert!(keys(&store, NS_WILL).await.is_empty());
    assert!(keys(&store, NS_SESSION).await.is_empty());
}

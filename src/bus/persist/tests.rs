use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::super::codec::SubOptions;
use super::super::router::{Attached, ConnectOutcome, Detach, Router};
use super::super::session::Session;
use super::super::MessageProps;
use super::records::{decode_session, encode_session};
use super::*;
use crate::store::{Caps, Store};

fn msg(topic: &str, payload: &'static [u8], qos: u8, retain: bool) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        props: None,
        origin: None,
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Duration::from_millis(5), Caps::NONE).unwrap()
}

/// A router (queues of 3 messages) with what `store` holds, as a restarted gateway builds it.
async fn restart(store: &Store) -> Router {
    let mut r = Router::new(8, 3);
    let (p, restored) = load(store.clone(), || r.new_queue()).await.unwrap();
    r.restore(restored);
    r.persist = Some(p);
    r
}

/// What a connection without a will hands back when it ends.
fn ended(state: SessionState) -> Detach {
    Detach {
        state,
        ..Detach::default()
    }
}

async fn attach(r: &Router, id: &str, present: bool) -> Attached {
    match r.connect(Some(id.into()), false, u32::MAX).await {
        ConnectOutcome::Accepted(a) => {
            assert_eq!(a.session_present, present, "session present for {id}");
            a
        }
        ConnectOutcome::Refused(code) => panic!("refused with {code}"),
    }
}

fn topics(queue: &ClientQueue) -> Vec<String> {
    std::iter::from_fn(|| queue.pop())
        .map(|m| m.topic)
        .collect()
}

async fn keys(store: &Store, ns: &str) -> Vec<String> {
    let entries = store.state_load(ns).await.unwrap();
    entries.into_iter().map(|(k, _)| k).collect()
}

#[test]
fn records_round_trip_and_damage_is_refused() {
    let m = msg("a/b", b"\x00\xffpayload", 2, true);
    for stage in [Stage::Queued, Stage::Sent(7), Stage::Released(65535)] {
        let bytes = rec::encode_message(&m, stage);
        assert_eq!(bytes[0], rec::VERSION);
        let decoded = rec::decode_message(&bytes, 0).unwrap();
        assert_eq!(
            (decoded.msg, decoded.stage, decoded.expired),
            (m.clone(), stage, false)
        );
        for cut in 0..bytes.len() {
            assert!(
                rec::decode_message(&bytes[..cut], 0).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(rec::decode_message(&longer, 0).is_err());
    }
    let mut v2 = rec::encode_message(&m, Stage::Queued);
    v2[0] = 2;
    assert_eq!(
        rec::decode_message(&v2, 0),
        Err("unknown record version 2".into())
    );
    let mut qos3 = rec::encode_message(&m, Stage::Queued);
    qos3[4] = 3;
    assert!(rec::decode_message(&qos3, 0).is_err());
    let sent_without_id = rec::encode_message(&m, Stage::Sent(0));
    assert!(rec::decode_message(&sent_without_id, 0).is_err());

    let s = SessionRecord {
        expiry: u32::MAX,
        disconnected_at: 1_700_000_000,
        next_pid: 42,
        subs: vec![("a/#".into(), 1, 0), ("b/+".into(), 0x2e, 77)],
    };
    let bytes = encode_session(&s);
    assert_eq!(decode_session(&bytes), Ok(s));
    for cut in 0..bytes.len() {
        assert!(decode_session(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn mqtt5_properties_round_trip_and_the_expiry_counts_down() {
    let props = MessageProps {
        payload_format: Some(1),
        expiry: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("a/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00id")),
        user: vec![("k".into(), "v".into()), ("k".into(), "".into())],
        sub_ids: vec![3, 268_435_455],
        ..MessageProps::default()
    };
    let m = Message {
        props: Some(std::sync::Arc::new(props.clone())),
        ..msg("a/b", b"x", 1, false)
    };
    let bytes = rec::encode_message(&m, Stage::Sent(3));
    let written = rec::unix_now();
    let d = rec::decode_message(&bytes, written).unwrap();
    assert_eq!(
        (d.msg.clone(), d.stage, d.expired),
        (m.clone(), Stage::Sent(3), false)
    );
    for cut in 0..bytes.len() {
        assert!(
            rec::decode_message(&bytes[..cut], written).is_err(),
            "cut at {cut}"
        );
    }
    // 45 s later, 15 s are left; 60 s later it has expired.
    let later = rec::decode_message(&bytes, written + 45).unwrap();
    assert_eq!(later.msg.props.as_ref().unwrap().expiry, Some(15));
    assert!(!later.expired);
    let gone = rec::decode_message(&bytes, written + 60).unwrap();
    assert!(gone.expired);
    // Only what is present is written: an empty set of properties stays empty.
    let bare = Message {
        props: Some(Default::default()),
        ..msg("t", b"", 0, true)
    };
    let d = rec::decode_message(&rec::encode_message(&bare, Stage::Queued), 0).unwrap();
    assert_eq!(d.msg, bare);
}

#[test]
fn queue_keys_sort_by_sequence_and_keep_the_client_id() {
    assert_eq!(
        parse_queue_key(&queue_key("a/b c", 255)),
        Some((255, "a/b c"))
    );
    assert!(queue_key("z", 9) < queue_key("a", 10));
    assert_eq!(parse_queue_key("00000000000000ff"), None);
    assert_eq!(parse_queue_key("xx"), None);
    assert_eq!(parse_queue_key("0000000000000g01/a"), None);
}

#[tokio::test]
async fn offline_queue_and_retained_come_back_bounded_by_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let a = attach(&r, "dev", false).await;
    r.subscribe(
        "dev",
        a.conn_id,
        &[("t/#".into(), SubOptions::qos(2))],
        None,
    );
    r.detach("dev", a.conn_id, ended(SessionState::default()));
    for (topic, qos) in [("t/1", 1), ("t/2", 2), ("t/0", 0), ("t/3", 1), ("t/4", 1)] {
        r.route(msg(topic, b"x", qos, false)).await;
    }
    r.route(msg("r/x", b"kept", 1, true)).await;
    r.route(msg("r/y", b"gone", 1, true)).await;
    r.route(msg("r/y", b"", 1, true)).await;
    // Queue of 3: t/1 was evicted, QoS 0 never queued offline; the store holds what memory does.
    assert_eq!(keys(&store, NS_QUEUE).await.len(), 3);
    assert_eq!(keys(&store, NS_RETAINED).await, ["r/x"]);

    // Restarted with a smaller queue: the newest 2 stay, the oldest is dropped and deleted.
    let mut r2 = Router::new(8, 2);
    let (p, restored) = load(store.clone(), || r2.new_queue()).await.unwrap();
    assert_eq!(restored.retained, [msg("r/x", b"kept", 1, true)]);
    r2.restore(restored);
    r2.persist = Some(p);
    assert_eq!(keys(&store, NS_QUEUE).await.len(), 2);
    let a = attach(&r2, "dev", true).await;
    // Delivered (in flight at detach, so kept), and a newcomer queued while connected.
    let mut s = Session::new();
    s.accepted(true, SessionState::default());
    let p = r2.persist.as_ref().unwrap();
    let mut sent = Vec::new();
    while let Some((m, key)) = a.queue.pop_keyed() {
        sent.push(m.topic.clone());
        let packet = s.deliver(m.clone()).unwrap();
        p.sent("dev", &a.queue, key.unwrap(), &m, &packet);
    }
    assert_eq!(sent, ["t/3", "t/4"]);
    r2.route(msg("t/5", b"x", 1, false)).await;
    r2.detach("dev", a.conn_id, ended(s.take_state()));
    assert_eq!(keys(&store, NS_QUEUE).await.len(), 3);
    let r3 = restart(&store).await;
    let a = attach(&r3, "dev", true).await;
    assert_eq!(a.restored.as_ref().unwrap().inflight.len(), 2);
    let (m, key) = a.queue.pop_keyed().unwrap();
    assert_eq!(m.topic, "t/5");
    assert!(a.queue.push_keyed(m, key, |_| {}).keyed);
    // A clean session taking the id over ends it, in the store too.
    r3.detach("dev", a.conn_id, ended(*a.restored.clone().unwrap()));
    let r2 = r3;
    match r2.connect(Some("dev".into()), true, 0).await {
        ConnectOutcome::Accepted(a) => assert!(!a.session_present),
        ConnectOutcome::Refused(code) => panic!("refused with {code}"),
    }
    assert!(keys(&store, NS_SESSION).await.is_empty());
    assert!(keys(&store, NS_QUEUE).await.is_empty());
}

#[tokio::test]
async fn sent_and_released_messages_are_resent_after_a_crash_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let a = attach(&r, "dev", false).await;
    r.subscribe(
        "dev",
        a.conn_id,
        &[("t/#".into(), SubOptions::qos(2))],
        None,
    );
    r.detach("dev", a.conn_id, ended(SessionState::default()));
    r.route(msg("t/1", b"one", 1, false)).await;
    r.route(msg("t/2", b"two", 2, false)).await;
    drop(r);

    // Connected again; both go out, no acknowledgement yet; then the "crash" (no detach).
    let r = restart(&store).await;
    let a = attach(&r, "dev", true).await;
    let mut s = Session::new();
    s.accepted(true, SessionState::default());
    let p = r.persist.as_ref().unwrap();
    for _ in 0..2 {
        let (m, key) = a.queue.pop_keyed().unwrap();
        let packet = s.deliver(m.clone()).unwrap();
        p.sent("dev", &a.queue, key.unwrap(), &m, &packet);
    }
    p.acked("dev", &a.queue, &Packet::Pubrec(2));
    p.acked("dev", &a.queue, &Packet::Puback(2)); // wrong ack for QoS 2: ignored
    drop(r);

    let r = restart(&store).await;
    let a = attach(&r, "dev", true).await;
    assert_eq!(
        a.restored.unwrap().inflight,
        [
            (1, Pending::Publish(msg("t/1", b"one", 1, false))),
            (2, Pending::Released)
        ]
    );
    assert!(a.queue.pop().is_none());
    let p = r.persist.as_ref().unwrap();
    // An MQTT 5 PUBACK with a reason code completes the flow as well.
    let v5_puback = Packet::Ack {
        kind: AckKind::Puback,
        pid: 1,
        reason: 0x10,
        reason_string: None,
        user: Vec::new(),
    };
    p.acked("dev", &a.queue, &v5_puback);
    p.acked("dev", &a.queue, &Packet::Pubcomp(2));
    assert!(keys(&store, NS_QUEUE).await.is_empty());
}

#[tokio::test]
async fn an_incoming_qos2_id_is_kept_from_pubrec_to_pubrel() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let publish = Packet::Publish(crate::bus::codec::Publish::new(
        "t".into(),
        Bytes::from_static(b"x"),
        2,
        false,
        5,
    ));
    let r = restart(&store).await;
    let a = attach(&r, "dev", false).await;
    let p = r.persist.as_ref().unwrap();
    // The PUBLISH alone writes nothing: its message may not be anywhere yet.
    p.received(&a.client_id, &a.queue, a.persistent, &publish);
    assert!(keys(&store, NS_QOS2_IN).await.is_empty());
    p.qos2_acknowledged("dev", 5);
    drop(r); // a crash: no detach

    let r = restart(&store).await;
    let a = attach(&r, "dev", true).await;
    assert_eq!(a.restored.as_ref().unwrap().incoming_qos2, [5]);
    let p = r.persist.as_ref().unwrap();
    // A resend changes nothing; PUBREL ends it.
    p.received(&a.client_id, &a.queue, a.persistent, &publish);
    assert_eq!(keys(&store, NS_QOS2_IN).await.len(), 1);
    p.received(&a.client_id, &a.queue, a.persistent, &Packet::Pubrel(5));
    assert!(keys(&store, NS_QOS2_IN).await.is_empty());
}

#[tokio::test]
async fn unreadable_records_are_skipped_and_kept_orphans_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let good = rec::encode_message(&msg("t", b"ok", 1, false), Stage::Queued);
    let dev = SessionRecord {
        expiry: crate::bus::expiry::NEVER,
        ..SessionRecord::default()
    };
    store.state_put(NS_SESSION, "dev", encode_session(&dev));
    store.state_put(NS_SESSION, "broken", vec![1, 0, 0]);
    store.state_put(NS_QUEUE, &queue_key("dev", 1), good.clone());
    store.state_put(NS_QUEUE, &queue_key("dev", 2), vec![9, 9, 9]);
    store.state_put(NS_QUEUE, &queue_key("dev", 3), good.clone());
    store.state_put(NS_QUEUE, &queue_key("nobody", 4), good.clone());
    store.state_put(NS_QUEUE, "not-a-key", good.clone());
    store.state_put(NS_RETAINED, "r", vec![]);

    store.state_put(NS_QUEUE, &queue_key("broken", 5), good.clone());
    store.flush().await.unwrap();

    // Unreadable records stay (a newer version may have written them), with what belongs to
    // them; the orphan of a session that is gone does not.
    let r = restart(&store).await;
    assert_eq!(keys(&store, NS_SESSION).await, ["broken", "dev"]);
    let mut want = vec![
        queue_key("dev", 1),
        queue_key("dev", 2),
        queue_key("dev", 3),
        queue_key("broken", 5),
        "not-a-key".to_string(),
    ];
    want.sort();
    assert_eq!(keys(&store, NS_QUEUE).await, want);
    assert_eq!(keys(&store, NS_RETAINED).await, ["r"]);
    let a = attach(&r, "dev", true).await;
    assert_eq!(topics(&a.queue), ["t", "t"]);
    // New keys continue after the highest one seen.
    assert_eq!(r.persist.as_ref().unwrap().seq(), 6);
}

#[tokio::test]
async fn subscription_options_and_ids_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let a = attach(&r, "dev", false).await;
    let opts = SubOptions {
        no_local: true,
        retain_as_published: true,
        ..SubOptions::qos(1)
    };
    r.subscribe("dev", a.conn_id, &[("t/#".into(), opts)], Some(7));
    r.detach("dev", a.conn_id, ended(SessionState::default()));

    let r2 = restart(&store).await;
    let b = attach(&r2, "dev", true).await;
    // No local: its own publish does not come back; retain as published and the id do.
    r2.route_from(msg("t/own", b"x", 1, false), Some("dev"))
        .await;
    r2.route(msg("t/other", b"y", 1, true)).await;
    let got = b.queue.pop().unwrap();
    assert_eq!(
        (got.topic.as_str(), got.qos, got.retain),
        ("t/other", 1, true)
    );
    assert_eq!(got.props.unwrap().sub_ids, [7]);
    assert!(b.queue.pop().is_none());
}

#[tokio::test]
async fn an_expired_session_leaves_the_store_and_a_shared_member_queues_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let a = match r.connect(Some("dev".into()), false, 10).await {
        ConnectOutcome::Accepted(a) => a,
        ConnectOutcome::Refused(code) => panic!("refused with {code}"),
    };
    r.subscribe(
        "dev",
        a.conn_id,
        &[("$share/g/t".into(), SubOptions::qos(1))],
        None,
    );
    r.detach("dev", a.conn_id, ended(SessionState::default()));
    // The only member of its group is offline: the message waits for it, in the store too.
    r.route(msg("t", b"x", 1, false)).await;
    assert_eq!(keys(&store, NS_SESSION).await, ["dev"]);
    assert_eq!(keys(&store, NS_QUEUE).await.len(), 1);
    let later = std::time::SystemTime::now() + Duration::from_secs(11);
    r.sweep(later);
    assert!(keys(&store, NS_SESSION).await.is_empty());
    assert!(keys(&store, NS_QUEUE).await.is_empty());
}

#[tokio::test]
async fn shared_group_membership_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = restart(&store).await;
    let a = attach(&r, "dev", false).await;
    r.subscribe(
        "dev",
        a.conn_id,
        &[("$share/g/t".into(), SubOptions::qos(1))],
        None,
    );
    r.detach("dev", a.conn_id, ended(SessionState::default()));
    drop(r);
    let r = restart(&store).await;
    let a = attach(&r, "dev", true).await;
    r.route(msg("t", b"x", 1, false)).await;
    let got = a.queue.pop().map(|m| (m.topic, m.qos));
    assert_eq!(got, Some(("t".to_string(), 1)));
}

mod lifetime;

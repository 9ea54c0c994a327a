use bytes::Bytes;

use super::*;
use crate::bus::codec::SubOptions;

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

fn drain(queue: &ClientQueue) -> Vec<(String, u8, bool)> {
    std::iter::from_fn(|| queue.pop())
        .map(|m| (m.topic, m.qos, m.retain))
        .collect()
}

async fn attach(r: &Router, id: &str, clean: bool) -> Attached {
    // As the codec sets it for 3.1.1.
    let expiry = if clean { 0 } else { crate::bus::expiry::NEVER };
    attach_v5(r, id, clean, expiry).await
}

async fn attach_v5(r: &Router, id: &str, clean_start: bool, expiry: u32) -> Attached {
    match r.connect(Some(id.into()), clean_start, expiry).await {
        ConnectOutcome::Accepted(a) => a,
        ConnectOutcome::Refused(code) => panic!("refused with {code}"),
    }
}

#[test]
fn client_queue_drops_new_qos0_or_oldest_when_full() {
    let o = ClientQueue::new(2);
    assert_eq!(o.push(msg("a", b"", 1, false)), 0);
    assert_eq!(o.push(msg("b", b"", 0, false)), 0);
    assert_eq!(o.push(msg("c", b"", 0, false)), 1); // QoS 0 dropped
    assert_eq!(o.push(msg("d", b"", 1, false)), 1); // oldest ("a") dropped
    assert_eq!(
        drain(&o),
        [("b".to_string(), 0, false), ("d".to_string(), 1, false)]
    );
}

#[test]
fn client_queue_byte_bound_and_newest_policy() {
    // 10 bytes: topic "t" + 4-byte payloads take 5 each.
    let o = ClientQueue::bounded(100, 10, QueueDrop::Oldest);
    assert_eq!(o.push(msg("t", b"aaaa", 1, false)), 0);
    assert_eq!(o.push(msg("t", b"bbbb", 1, false)), 0);
    // A 9-byte message evicts both.
    assert_eq!(o.push(msg("t", b"cccccccc", 1, false)), 2);
    // Larger than the whole bound: dropped itself.
    assert_eq!(o.push(msg("t", b"dddddddddddd", 1, false)), 1);
    assert_eq!(drain(&o).len(), 1);
    let o = ClientQueue::bounded(2, usize::MAX, QueueDrop::Newest);
    o.push(msg("a", b"", 1, false));
    o.push(msg("b", b"", 1, false));
    assert_eq!(o.push(msg("c", b"", 2, false)), 1);
    assert_eq!(
        drain(&o),
        [("a".to_string(), 1, false), ("b".to_string(), 1, false)]
    );
    // Room again once drained, and the byte count went back to zero.
    let o = ClientQueue::bounded(100, 10, QueueDrop::Newest);
    o.push(msg("t", b"aaaa", 1, false));
    o.push(msg("t", b"bbbb", 1, false));
    assert_eq!(o.push(msg("t", b"c", 1, false)), 1);
    drain(&o);
    assert_eq!(o.push(msg("t", b"cccccccc", 1, false)), 0);
}

#[tokio::test]
async fn fan_out_downgrades_qos_and_sends_one_copy() {
    let r = Router::new(8, 100);
    let a = attach(&r, "a", true).await;
    r.subscribe(
        "a",
        a.conn_id,
        &[
            ("x/#".into(), SubOptions::qos(0)),
            ("x/+".into(), SubOptions::qos(1)),
        ],
        None,
    );
    r.route(msg("x/1", b"v", 1, true)).await;
    r.route(msg("y", b"v", 1, false)).await;
    r.route(msg("x/2", b"v", 0, false)).await;
    assert_eq!(
        drain(&a.queue),
        [("x/1".to_string(), 1, false), ("x/2".to_string(), 0, false)]
    );
    let s = r.stats.snapshot();
    assert_eq!((s.messages_in, s.clients_connected), (3, 1));
}

#[tokio::test]
async fn retained_store_replaces_deletes_and_is_sent_on_subscribe() {
    let r = Router::new(8, 100);
    r.route(msg("t/1", b"old", 1, true)).await;
    r.route(msg("t/1", b"new", 1, true)).await;
    r.route(msg("t/2", b"x", 0, true)).await;
    r.route(msg("t/2", b"", 0, true)).await;
    r.route(msg("t/3", b"not retained", 0, false)).await;
    let a = attach(&r, "a", true).await;
    r.subscribe(
        "a",
        a.conn_id,
        &[
            ("t/#".into(), SubOptions::qos(0)),
            ("t/1".into(), SubOptions::qos(1)),
        ],
        None,
    );
    let got: Vec<Message> = std::iter::from_fn(|| a.queue.pop()).collect();
    assert_eq!(got, [msg("t/1", b"new", 1, true)]);
}

#[tokio::test]
async fn offline_persistent_session_queues_qos1_only_bounded() {
    let r = Router::new(8, 2);
    let a = attach(&r, "p", false).await;
    r.subscribe("p", a.conn_id, &[("#".into(), SubOptions::qos(1))], None);
    r.detach("p", a.conn_id, Detach::default());
    assert_eq!(r.stats.snapshot().clients_connected, 0);
    r.route(msg("q0", b"", 0, false)).await;
    for t in ["m1", "m2", "m3"] {
        r.route(msg(t, b"", 1, false)).await;
    }
    assert_eq!(r.stats.snapshot().dropped, 1);
    let b = attach(&r, "p", false).await;
    assert!(b.session_present);
    assert_eq!(
        drain(&b.queue),
        [("m2".to_string(), 1, false), ("m3".to_string(), 1, false)]
    );
}

#[tokio::test]
async fn clean_session_discards_previous_session() {
    let r = Router::new(8, 10);
    let a = attach(&r, "p", false).await;
    r.subscribe("p", a.conn_id, &[("#".into(), SubOptions::qos(1))], None);
    r.detach("p", a.conn_id, Detach::default());
    let b = attach(&r, "p", true).await;
    assert!(!b.session_present);
    r.route(msg("m", b"", 1, false)).await;
    assert!(b.queue.pop().is_none());
    r.detach("p", b.conn_id, Detach::default());
    let c = attach(&r, "p", false).await;
    assert!(!c.session_present);
}

#[tokio::test]
async fn takeover_kicks_old_connection_and_keeps_session() {
    let r = std::sync::Arc::new(Router::new(8, 10));
    let old = match r.connect(Some("t".into()), false, u32::MAX).await {
        ConnectOutcome::Accepted(a) => a,
        ConnectOutcome::Refused(_) => unreachable!(),
    };
    r.subscribe("t", old.conn_id, &[("s".into(), SubOptions::qos(1))], None);
    // What the old connection task does when kicked: hand back its state, then end.
    let r2 = r.clone();
    let old_task = tokio::spawn(async move {
        old.queue.kicked(old.conn_id).await;
        let state = SessionState {
            next_pid: 9,
            ..SessionState::default()
        };
        let end = Detach {
            state,
            ..Detach::default()
        };
        r2.detach("t", old.conn_id, end);
    });
    let new = attach(&r, "t", false).await;
    old_task.await.unwrap();
    assert!(new.session_present);
    assert_eq!(new.restored.as_ref().map(|r| r.next_pid), Some(9));
    r.route(msg("s", b"", 1, false)).await;
    assert_eq!(drain(&new.queue), [("s".to_string(), 1, false)]);
    assert_eq!(r.stats.snapshot().clients_connected, 1);
}

#[tokio::test]
async fn connection_limit_and_assigned_ids() {
    let r = Router::new(1, 10);
    let a = match r.connect(None, true, 0).await {
        ConnectOutcome::Accepted(a) => a,
        ConnectOutcome::Refused(_) => unreachable!(),
    };
    assert!(a.client_id.starts_with("edgegate-"));
    assert!(matches!(
        r.connect(None, true, 0).await,
        ConnectOutcome::Refused(3)
    ));
}

#[tokio::test]
async fn inproc_subscription_gets_retained_then_live_one_copy() {
    let r = Router::new(8, 10);
    r.route(msg("a/b", b"r", 1, true)).await;
    let (id, mut rx, pending) = r.subscribe_inproc(vec!["a/#".into(), "a/+".into()], 4, true);
    assert_eq!(pending, [msg("a/b", b"r", 1, true)]);
    r.route(msg("a/c", b"live", 2, true)).await;
    assert_eq!(rx.recv().await, Some(msg("a/c", b"live", 2, false)));
    assert!(rx.try_recv().is_err());
    r.unsubscribe_inproc(id);
    assert_eq!(rx.recv().await, None);
}

mod lifetime;

#[tokio::test]
async fn an_acked_route_waits_for_the_durable_subscribers_it_matched() {
    let r = Router::new(8, 10);
    let (_, mut plain, _) = r.subscribe_inproc(vec!["up/#".into()], 4, false);
    let (_, mut durable) = r.subscribe_durable(vec!["up/#".into()], 4);
    // Not matched by the durable subscriber: nothing to wait for.
    assert!(r
        .route_acked(msg("local/x", b"1", 1, false), None)
        .await
        .1
        .is_empty());
    // Matched, but a plain route (in-process publish, will): delivered without a sender.
    r.route(msg("up/a", b"2", 1, false)).await;
    let (m, done) = durable.recv().await.unwrap();
    assert_eq!((m.payload.as_ref(), done.is_none()), (&b"2"[..], true));

    let (_, mut commit) = r.route_acked(msg("up/b", b"3", 1, false), None).await;
    assert!(!commit.is_empty());
    let (m, done) = durable.recv().await.unwrap();
    assert_eq!(m.payload.as_ref(), b"3");
    let waiting = tokio::time::timeout(Duration::from_millis(20), commit.wait()).await;
    assert!(
        waiting.is_err(),
        "the commit resolved before the subscriber fired it"
    );
    done.unwrap().send(()).unwrap();
    assert!(commit.wait().await);
    // Plain subscribers got both, as usual.
    assert_eq!(plain.recv().await.unwrap().payload.as_ref(), b"2");
    assert_eq!(plain.recv().await.unwrap().payload.as_ref(), b"3");

    // Dropped unfired: the publisher learns the message may be lost.
    let (_, mut commit) = r.route_acked(msg("up/c", b"4", 2, false), None).await;
    drop(durable.recv().await.unwrap());
    assert!(!commit.wait().await);
}

#[tokio::test]
async fn a_durable_subscriber_gone_between_match_and_send_is_not_an_acknowledgement() {
    // A reload's old forward stage ends while a publish it matched is on its way to it: the
    // receiver is gone but the router still lists it.
    let r = Router::new(8, 10);
    let (_, durable) = r.subscribe_durable(vec!["up/#".into()], 4);
    drop(durable);
    let (matched, mut commit) = r.route_acked(msg("up/x", b"1", 1, false), None).await;
    assert_eq!(matched, 1);
    assert!(
        !commit.wait().await,
        "a publish no outbox took must not be acknowledged"
    );
}

//! The state machine fed with packets and clock ticks, no sockets.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bus::Message;
use crate::mqttsn::codec::{Frame, Packet, Qos, ReturnCode, WillTopic};
use crate::mqttsn::session::{Action, Engine, Limits};
use crate::mqttsn::topics::Predefined;

const A: &str = "127.0.0.1:5001";
const B: &str = "127.0.0.1:5002";

fn engine(max_clients: usize) -> Engine {
    Engine::new(
        Limits {
            gateway_id: 1,
            max_clients,
            max_clients_per_source: 100,
            session_expiry: Duration::from_secs(3600),
            max_rate: 100,
            max_buffered: 10,
            max_topics: 10,
            t_retry: Duration::from_secs(1),
            n_retry: 2,
        },
        Predefined::default(),
    )
}

fn feed(e: &mut Engine, from: &str, p: Packet, now: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    let frame = Frame {
        forwarded: None,
        packet: p,
    };
    e.handle(from.parse().unwrap(), frame, now, &mut out);
    out
}

fn sent(actions: &[Action]) -> Vec<Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(_, _, p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn connect(id: &str, will: bool, clean: bool, duration: u16) -> Packet {
    Packet::Connect {
        will,
        clean_session: clean,
        duration,
        client_id: id.into(),
    }
}

fn with_will(e: &mut Engine, now: Instant) {
    feed(e, A, connect("n", true, true, 10), now);
    feed(
        e,
        A,
        Packet::WillTopic(Some(WillTopic {
            qos: Qos::One,
            retain: true,
            topic: "w/n".into(),
        })),
        now,
    );
    let out = feed(e, A, Packet::WillMsg(Bytes::from_static(b"bye")), now);
    assert_eq!(sent(&out), [Packet::ConnAck(ReturnCode::Accepted)]);
}

fn will_published(out: &[Action]) -> bool {
    out.iter().any(|a| {
        matches!(a, Action::Publish { topic, payload, qos: 1, retain: true }
            if topic == "w/n" && payload == "bye")
    })
}

#[test]
fn keepalive_supervision_is_one_and_a_half_times_the_duration() {
    let t0 = Instant::now();
    let mut e = engine(10);
    with_will(&mut e, t0);
    let mut out = Vec::new();
    e.tick(t0 + Duration::from_millis(14_900), &mut out);
    assert!(out.is_empty(), "{out:?}");
    // Any message from the client restarts the clock.
    feed(
        &mut e,
        A,
        Packet::PingReq(None),
        t0 + Duration::from_millis(14_900),
    );
    e.tick(t0 + Duration::from_millis(15_100), &mut out);
    assert!(out.is_empty(), "{out:?}");
    e.tick(t0 + Duration::from_millis(30_000), &mut out);
    assert!(will_published(&out), "{out:?}");
    // Clean session: forgotten, and its state deleted.
    assert!(out.contains(&Action::Forget("n".into())));
    assert!(e.clients.is_empty() && e.by_peer.is_empty());
}

#[test]
fn oversleeping_publishes_the_will_and_disconnect_does_not() {
    let t0 = Instant::now();
    let mut e = engine(10);
    with_will(&mut e, t0);
    let out = feed(&mut e, A, Packet::Disconnect(Some(60)), t0);
    assert_eq!(sent(&out), [Packet::Disconnect(None)]);
    let mut out = Vec::new();
    // Asleep, keepalive no longer applies; 1.5 x 60 s does.
    e.tick(t0 + Duration::from_secs(89), &mut out);
    assert!(out.is_empty(), "{out:?}");
    e.tick(t0 + Duration::from_secs(91), &mut out);
    assert!(will_published(&out), "{out:?}");

    let mut e = engine(10);
    with_will(&mut e, t0);
    let out = feed(&mut e, A, Packet::Disconnect(None), t0);
    assert!(!will_published(&out));
    let mut out = Vec::new();
    e.tick(t0 + Duration::from_secs(3600), &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn congestion_past_max_clients_and_address_takeover() {
    let t0 = Instant::now();
    let mut e = engine(1);
    let out = feed(&mut e, A, connect("one", false, true, 0), t0);
    assert_eq!(sent(&out), [Packet::ConnAck(ReturnCode::Accepted)]);
    let out = feed(&mut e, B, connect("two", false, true, 0), t0);
    assert_eq!(sent(&out), [Packet::ConnAck(ReturnCode::Congestion)]);
    // The same client id from a new address moves its session there.
    let out = feed(&mut e, B, connect("one", false, false, 0), t0);
    assert_eq!(sent(&out), [Packet::ConnAck(ReturnCode::Accepted)]);
    assert_eq!(e.by_peer.len(), 1);
    let out = feed(&mut e, A, Packet::PingReq(None), t0);
    assert!(out.is_empty(), "old address still served: {out:?}");
}

#[test]
fn clean_session_drops_subscriptions_and_overlapping_filters_deliver_once() {
    let t0 = Instant::now();
    let mut e = engine(10);
    feed(&mut e, A, connect("s", false, false, 0), t0);
    for (i, f) in ["a/#", "a/+"].iter().enumerate() {
        let out = feed(
            &mut e,
            A,
            Packet::Subscribe {
                dup: false,
                qos: Qos::Zero,
                msg_id: i as u16 + 1,
                topic: crate::mqttsn::codec::SubTopic::Name(f.to_string()),
            },
            t0,
        );
        assert!(out.contains(&Action::Subscribe {
            client: "s".into(),
            filter: f.to_string()
        }));
    }
    let msg = Message {
        topic: "ab".into(),
        payload: Bytes::from_static(b"1"),
        qos: 0,
        retain: false,
        props: None,
        origin: None,
    };
    let msg2 = Message {
        topic: "a/b".into(),
        ..msg.clone()
    };
    let mut out = Vec::new();
    // Two subscriptions match a/b, each delivers it: only the first filter's copy goes out.
    e.deliver("s", "a/+", &msg2, t0, &mut out);
    assert!(sent(&out).is_empty());
    e.deliver("s", "a/#", &msg2, t0, &mut out);
    assert!(matches!(&sent(&out)[..], [Packet::Register { topic, .. }] if topic == "a/b"));
    // No filter matches `ab`.
    out.clear();
    e.deliver("s", "a/#", &msg, t0, &mut out);
    assert!(out.is_empty());
    let out = feed(&mut e, A, connect("s", false, true, 0), t0);
    let unsubs = out
        .iter()
        .filter(|a| matches!(a, Action::Unsubscribe { .. }))
        .count();
    assert_eq!(unsubs, 2);
}

#[test]
fn connectionless_publishes_are_rate_limited_per_source() {
    let t0 = Instant::now();
    let mut e = Engine::new(
        Limits {
            max_rate: 3,
            ..engine(10).limits
        },
        Predefined::new(&[(1, "p/one".into())]),
    );
    let p = || {
        Packet::Publish(crate::mqttsn::codec::Publish {
            dup: false,
            qos: Qos::MinusOne,
            retain: false,
            topic: crate::mqttsn::codec::TopicRef::Predefined(1),
            msg_id: 0,
            data: Bytes::from_static(b"1"),
        })
    };
    let published = |out: &[Action]| {
        out.iter()
            .filter(|a| matches!(a, Action::Publish { .. }))
            .count()
    };
    let mut n = 0;
    for _ in 0..10 {
        n += published(&feed(&mut e, A, p(), t0));
    }
    assert_eq!(n, 3);
    // Another source has its own budget; time refills it.
    assert_eq!(published(&feed(&mut e, B, p(), t0)), 1);
    assert_eq!(
        published(&feed(&mut e, A, p(), t0 + Duration::from_secs(1))),
        1
    );
    assert_eq!(e.counters.rate_limited, 7);
}

#[test]
fn a_lost_clients_pubrel_is_resumed_after_a_reconnect_and_a_restore() {
    let t0 = Instant::now();
    let mut e = engine(10);
    feed(&mut e, A, connect("p", false, false, 0), t0);
    feed(
        &mut e,
        A,
        Packet::Subscribe {
            dup: false,
            qos: Qos::Two,
            msg_id: 1,
            topic: crate::mqttsn::codec::SubTopic::Short(*b"ab"),
        },
        t0,
    );
    let msg = Message {
        topic: "ab".into(),
        payload: Bytes::from_static(b"1"),
        qos: 2,
        retain: false,
        props: None,
        origin: None,
    };
    let mut out = Vec::new();
    e.deliver("p", "ab", &msg, t0, &mut out);
    let Some(Packet::Publish(p)) = sent(&out).pop() else {
        panic!("no PUBLISH: {out:?}");
    };
    let out = feed(&mut e, A, Packet::PubRec(p.msg_id), t0);
    assert_eq!(sent(&out), [Packet::PubRel(p.msg_id)]);
    // No PUBCOMP: two retries, then lost.
    let mut out = Vec::new();
    for s in 1..=3 {
        e.tick(t0 + Duration::from_secs(s), &mut out);
    }
    assert_eq!(e.counters.clients_lost, 1);
    // The session as stored, brought back by a restarted gateway.
    let wall = std::time::SystemTime::now();
    let saved = e.snapshot("p", t0, wall).unwrap();
    let mut e2 = engine(10);
    e2.restore("p", &saved, t0, wall).unwrap();
    for e in [&mut e, &mut e2] {
        let out = feed(
            e,
            A,
            connect("p", false, false, 0),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(
            sent(&out),
            [
                Packet::ConnAck(ReturnCode::Accepted),
                Packet::PubRel(p.msg_id)
            ]
        );
        let out = feed(e, A, Packet::PubComp(p.msg_id), t0 + Duration::from_secs(5));
        assert!(sent(&out).is_empty(), "{out:?}");
    }
}

#[test]
fn one_source_holds_at_most_its_share_and_silent_sessions_expire() {
    let t0 = Instant::now();
    let mut e = Engine::new(
        Limits {
            max_clients_per_source: 2,
            session_expiry: Duration::from_secs(60),
            ..engine(10).limits
        },
        Predefined::default(),
    );
    let accepted = [Packet::ConnAck(ReturnCode::Accepted)];
    let refused = [Packet::ConnAck(ReturnCode::Congestion)];
    // Cycling ids from one address with clean session off: each stays, up to the share.
    assert_eq!(
        sent(&feed(&mut e, A, connect("a", false, false, 0), t0)),
        accepted
    );
    assert_eq!(
        sent(&feed(&mut e, A, connect("b", false, false, 0), t0)),
        accepted
    );
    assert_eq!(
        sent(&feed(&mut e, B, connect("c", false, false, 0), t0)),
        refused
    );
    // An existing session of the source is not a new one (B is another port, the same
    // address); another address is another source.
    assert_eq!(
        sent(&feed(&mut e, B, connect("a", false, false, 0), t0)),
        accepted
    );
    assert_eq!(e.counters.clients_refused, 1);
    let out = feed(&mut e, "127.0.0.2:5001", connect("d", false, true, 0), t0);
    assert_eq!(sent(&out), accepted);
    // A clean session displaced from its address is gone at once.
    let out = feed(&mut e, "127.0.0.2:5001", connect("x", false, false, 0), t0);
    assert!(out.contains(&Action::Forget("d".into())), "{out:?}");
    // Silent past the expiry: a disconnected one and one connected with keepalive 0 are
    // removed; one with a keepalive is supervised by it instead.
    let out = feed(
        &mut e,
        "127.0.0.3:5001",
        connect("k", false, false, 600),
        t0,
    );
    assert_eq!(sent(&out), accepted);
    let mut out = Vec::new();
    e.tick(t0 + Duration::from_secs(60), &mut out);
    assert!(out.is_empty(), "{out:?}");
    e.tick(t0 + Duration::from_secs(61), &mut out);
    let mut forgotten: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Forget(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    forgotten.sort();
    assert_eq!(forgotten, ["a", "b", "x"]);
    assert_eq!(e.counters.sessions_expired, 3);
    assert!(e.clients.contains_key("k"));
    // Their places are free again.
    let out = feed(
        &mut e,
        B,
        connect("c", false, false, 0),
        t0 + Duration::from_secs(61),
    );
    assert_eq!(sent(&out), accepted);
}

use bytes::Bytes;

use super::*;
use crate::bus::codec::{Connect, Protocol, SubOptions, Will};

fn connect_packet(client_id: &str, clean: bool, keep_alive: u16) -> Packet {
    Packet::Connect(Connect {
        protocol: Protocol::V311,
        clean_session: clean,
        keep_alive,
        client_id: client_id.into(),
        will: Some(Will {
            topic: "dev/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: 1,
            retain: true,
            delay: 0,
            props: None,
        }),
        username: None,
        password: None,
        ..Connect::v311("", clean, 0)
    })
}

fn msg(topic: &str, qos: u8) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"v"),
        qos,
        retain: false,
        props: None,
        origin: None,
    }
}

fn publish(topic: &str, qos: u8, pid: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: topic.into(),
        pid,
        payload: Bytes::from_static(b"v"),
        props: None,
        alias: 0,
        sub_ids: vec![],
    })
}

/// A session that went through CONNECT and was accepted without a previous session.
fn connected() -> Session {
    let mut s = Session::new();
    let out = s.handle(connect_packet("c1", true, 30));
    assert_eq!(
        out,
        vec![Action::Connect {
            client_id: Some("c1".into()),
            clean_session: true,
            username: None,
            password: None,
        }]
    );
    let out = s.accepted(false, SessionState::default());
    assert_eq!(
        out,
        vec![Action::Send(Packet::Connack {
            session_present: false,
            code: 0,
            props: None,
        })]
    );
    s
}

fn is_close(actions: &[Action]) -> bool {
    matches!(actions.last(), Some(Action::Close(_)))
}

#[test]
fn first_packet_must_be_connect() {
    let mut s = Session::new();
    assert!(is_close(&s.handle(Packet::Pingreq)));
    assert!(!s.is_connected());
}

#[test]
fn second_connect_closes_and_keeps_will() {
    let mut s = connected();
    assert!(is_close(&s.handle(connect_packet("c1", true, 30))));
    assert_eq!(s.take_will().map(|w| w.topic), Some("dev/status".into()));
}

#[test]
fn disconnect_discards_will() {
    let mut s = connected();
    assert!(is_close(&s.handle(Packet::DISCONNECT)));
    assert_eq!(s.take_will(), None);
}

#[test]
fn empty_client_id() {
    let mut s = Session::new();
    assert_eq!(
        s.handle(connect_packet("", true, 0)),
        vec![Action::Connect {
            client_id: None,
            clean_session: true,
            username: None,
            password: None,
        }]
    );
    let mut s = Session::new();
    let out = s.handle(connect_packet("", false, 0));
    assert_eq!(
        out[0],
        Action::Send(Packet::Connack {
            session_present: false,
            code: 2,
            props: None,
        })
    );
    assert!(is_close(&out));
}

#[test]
fn unsupported_level_gets_connack_1() {
    let mut s = Session::new();
    let out = s.invalid(&DecodeError::UnsupportedProtocolLevel(5));
    assert_eq!(
        out[0],
        Action::Send(Packet::Connack {
            session_present: false,
            code: 1,
            props: None,
        })
    );
    assert!(is_close(&out));
    // After CONNECT, a decode error just closes.
    let mut s = connected();
    assert_eq!(s.invalid(&DecodeError::Malformed("x")).len(), 1);
}

#[test]
fn refused_sends_code_and_drops_will() {
    let mut s = Session::new();
    s.handle(connect_packet("c1", true, 0));
    let out = s.refused(3);
    assert_eq!(
        out[0],
        Action::Send(Packet::Connack {
            session_present: false,
            code: 3,
            props: None,
        })
    );
    assert!(is_close(&out));
    assert_eq!(s.take_will(), None);
}

#[test]
fn keepalive() {
    let s = connected();
    assert_eq!(s.idle_timeout(), Some(Duration::from_secs(45)));
    let mut s = Session::new();
    s.handle(connect_packet("c1", true, 0));
    s.accepted(false, SessionState::default());
    assert_eq!(s.idle_timeout(), None);
}

#[test]
fn publish_qos0_and_qos1_route_before_ack() {
    let mut s = connected();
    assert_eq!(
        s.handle(publish("a", 0, 0, false)),
        vec![Action::Route(msg("a", 0))]
    );
    assert_eq!(
        s.handle(publish("a", 1, 5, false)),
        vec![Action::Route(msg("a", 1)), Action::Send(Packet::Puback(5))]
    );
}

#[test]
fn qos2_exactly_once() {
    let mut s = connected();
    assert_eq!(
        s.handle(publish("a", 2, 9, false)),
        vec![Action::Route(msg("a", 2)), Action::Send(Packet::Pubrec(9))]
    );
    // Resent before PUBREL: acknowledged, not delivered again.
    assert_eq!(
        s.handle(publish("a", 2, 9, true)),
        vec![Action::Send(Packet::Pubrec(9))]
    );
    assert_eq!(
        s.handle(Packet::Pubrel(9)),
        vec![Action::Send(Packet::Pubcomp(9))]
    );
    // After PUBREL the id is free again: a new message with it is delivered.
    assert_eq!(s.handle(publish("a", 2, 9, false)).len(), 2);
}

#[test]
fn subscribe_grants_and_rejects() {
    let mut s = connected();
    let out = s.handle(Packet::Subscribe {
        pid: 3,
        sub_id: None,
        filters: vec![
            ("a/#".into(), SubOptions::qos(0)),
            ("b/+".into(), SubOptions::qos(2)),
            ("c".into(), SubOptions::qos(1)),
        ],
        user: vec![],
    });
    assert_eq!(
        out,
        vec![Action::Subscribe {
            pid: 3,
            sub_id: None,
            filters: vec![
                ("a/#".into(), SubOptions::qos(0)),
                ("b/+".into(), SubOptions::qos(2)),
                ("c".into(), SubOptions::qos(1)),
            ]
        }]
    );
    // Any malformed filter is a protocol violation: close, no SUBACK.
    for bad in ["a#", "c/#/d", "", "a/b+"] {
        let mut s = connected();
        let out = s.handle(Packet::Subscribe {
            pid: 4,
            sub_id: None,
            filters: vec![
                ("ok".into(), SubOptions::qos(1)),
                (bad.into(), SubOptions::qos(1)),
            ],
            user: vec![],
        });
        assert_eq!(out.len(), 1, "{bad:?}: {out:?}");
        assert!(is_close(&out), "{bad:?}");
        let mut s = connected();
        assert!(is_close(&s.handle(Packet::Unsubscribe {
            pid: 5,
            filters: vec![bad.into()]
        })));
    }
}

#[test]
fn unsubscribe_and_ping() {
    let mut s = connected();
    assert_eq!(
        s.handle(Packet::Unsubscribe {
            pid: 2,
            filters: vec!["a".into()]
        }),
        vec![
            Action::Unsubscribe(vec!["a".into()]),
            Action::Send(Packet::Unsuback {
                pid: 2,
                codes: vec![]
            })
        ]
    );
    assert_eq!(
        s.handle(Packet::Pingreq),
        vec![Action::Send(Packet::Pingresp)]
    );
}

#[test]
fn server_packets_from_client_close() {
    let mut s = connected();
    assert!(is_close(&s.handle(Packet::Pingresp)));
}

#[test]
fn outbound_qos1_window_and_puback() {
    let mut s = connected();
    let mut pids = Vec::new();
    for _ in 0..MAX_INFLIGHT {
        assert!(s.can_send());
        match s.deliver(msg("t", 1)) {
            Ok(Packet::Publish(p)) => {
                assert_eq!((p.qos, p.dup, p.retain), (1, false, false));
                pids.push(p.pid);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!s.can_send());
    assert_eq!(pids, (1..=MAX_INFLIGHT as u16).collect::<Vec<_>>());
    assert_eq!(s.handle(Packet::Puback(1)), vec![]);
    assert!(s.can_send());
    // QoS 0 take no packet id.
    assert!(matches!(s.deliver(msg("t", 2)), Ok(Packet::Publish(p)) if p.qos == 2 && p.pid == 33));
    assert!(matches!(s.deliver(msg("t", 0)), Ok(Packet::Publish(p)) if p.qos == 0 && p.pid == 0));
}

#[test]
fn unacked_messages_resent_with_dup_after_reconnect() {
    let mut s = connected();
    s.deliver(msg("t/1", 1)).unwrap();
    s.deliver(msg("t/2", 1)).unwrap();
    s.deliver(msg("t/3", 1)).unwrap();
    s.handle(Packet::Puback(2));
    let state = s.take_state();
    assert_eq!(state.next_pid, 4);

    let mut s = Session::new();
    s.handle(connect_packet("c1", false, 0));
    let out = s.accepted(true, state);
    assert_eq!(
        out,
        vec![
            Action::Send(Packet::Connack {
                session_present: true,
                code: 0,
                props: None,
            }),
            Action::Send(publish("t/1", 1, 1, true)),
            Action::Send(publish("t/3", 1, 3, true)),
        ]
    );
    // New ids skip those still in flight.
    assert!(matches!(s.deliver(msg("t/4", 1)), Ok(Packet::Publish(p)) if p.pid == 4));
    s.handle(Packet::Puback(1));
    s.handle(Packet::Puback(3));
    s.handle(Packet::Puback(4));
    assert!(s.take_state().inflight.is_empty());
}

#[test]
fn outbound_qos2_flow_and_resend_after_reconnect() {
    let mut s = Session::with_max_inflight(2);
    s.handle(connect_packet("c1", false, 0));
    s.accepted(false, SessionState::default());
    assert!(matches!(s.deliver(msg("t/1", 2)), Ok(Packet::Publish(p)) if p.qos == 2 && p.pid == 1));
    assert!(matches!(s.deliver(msg("t/2", 2)), Ok(Packet::Publish(p)) if p.qos == 2 && p.pid == 2));
    assert!(!s.can_send());
    // PUBACK does not complete a QoS 2 message.
    assert_eq!(s.handle(Packet::Puback(1)), vec![]);
    assert!(!s.can_send());
    assert_eq!(
        s.handle(Packet::Pubrec(1)),
        vec![Action::Send(Packet::Pubrel(1))]
    );
    // Still in flight until PUBCOMP.
    assert!(!s.can_send());
    let state = s.take_state();
    assert_eq!(state.inflight.len(), 2);

    let mut s = Session::with_max_inflight(2);
    s.handle(connect_packet("c1", false, 0));
    let out = s.accepted(true, state);
    assert_eq!(
        out[1..],
        [
            Action::Send(Packet::Pubrel(1)),
            Action::Send(publish("t/2", 2, 2, true)),
        ]
    );
    assert_eq!(s.handle(Packet::Pubcomp(1)), vec![]);
    assert!(s.can_send());
    s.handle(Packet::Pubrec(2));
    s.handle(Packet::Pubcomp(2));
    assert!(s.take_state().inflight.is_empty());
}

#[test]
fn packet_ids_wrap_and_skip_zero() {
    let mut s = connected();
    let state = SessionState {
        next_pid: u16::MAX,
        ..SessionState::default()
    };
    s.accepted(false, state);
    assert!(matches!(s.deliver(msg("t", 1)), Ok(Packet::Publish(p)) if p.pid == u16::MAX));
    assert!(matches!(s.deliver(msg("t", 1)), Ok(Packet::Publish(p)) if p.pid == 1));
}

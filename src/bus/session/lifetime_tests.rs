//! Session expiry and will delay as a v5 connection states and changes them.

use bytes::Bytes;

use super::*;
use crate::bus::codec::{Connect, Protocol, SubOptions, Will};

fn connect_v5(session_expiry: u32, will_delay: Option<u32>) -> Packet {
    Packet::Connect(Connect {
        protocol: Protocol::V5,
        session_expiry,
        will: will_delay.map(|delay| Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"gone"),
            qos: 0,
            retain: false,
            delay,
            props: None,
        }),
        ..Connect::v311("c", true, 0)
    })
}

fn connected(session_expiry: u32, will_delay: Option<u32>) -> Session {
    let mut s = Session::new();
    let out = s.handle(connect_v5(session_expiry, will_delay));
    assert!(matches!(out[..], [Action::Connect { .. }]), "{out:?}");
    s.accepted(false, SessionState::default());
    s
}

fn disconnect(reason: u8, session_expiry: Option<u32>) -> Packet {
    Packet::Disconnect {
        reason,
        session_expiry,
        reason_string: None,
    }
}

/// DISCONNECT 0x82 (a reason string may come with it), then close.
fn protocol_error(out: &[Action]) -> bool {
    matches!(
        out,
        [
            Action::Send(Packet::Disconnect { reason: 0x82, .. }),
            Action::Close(_)
        ]
    )
}

#[test]
fn expiry_and_will_delay_come_from_connect() {
    let s = connected(300, Some(20));
    assert_eq!((s.session_expiry(), s.will_delay()), (Some(300), 20));
    let s = connected(0, None);
    assert_eq!((s.session_expiry(), s.will_delay()), (Some(0), 0));
}

#[test]
fn disconnect_changes_expiry_but_not_up_from_zero() {
    let mut s = connected(300, None);
    s.handle(disconnect(0, Some(0)));
    assert_eq!(s.session_expiry(), Some(0));
    assert!(s.orderly());

    let mut s = connected(0, Some(5));
    let out = s.handle(disconnect(0, Some(10)));
    assert!(protocol_error(&out), "{out:?}");
    assert_eq!(s.session_expiry(), Some(0));
    // A protocol error is no orderly end: the will stays due.
    assert!(!s.orderly());
    assert!(s.take_will().is_some());
}

#[test]
fn disconnect_0x04_keeps_the_will_other_reasons_discard_it() {
    let mut s = connected(60, Some(5));
    s.handle(disconnect(0x04, None));
    assert_eq!(s.take_will().map(|w| w.topic), Some("w".to_string()));
    assert_eq!(s.session_expiry(), Some(60));
    let mut s = connected(60, Some(5));
    s.handle(disconnect(0x00, None));
    assert!(s.take_will().is_none());
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut s = connected(0, None);
    let sub = |filter: &str, no_local| Packet::Subscribe {
        pid: 1,
        sub_id: None,
        filters: vec![(
            filter.into(),
            SubOptions {
                no_local,
                ..SubOptions::qos(1)
            },
        )],
        user: vec![],
    };
    let out = s.handle(sub("a/b", true));
    assert!(matches!(out[..], [Action::Subscribe { .. }]), "{out:?}");
    let out = s.handle(sub("$share/g/a/b", true));
    assert!(protocol_error(&out), "{out:?}");
}

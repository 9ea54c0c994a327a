use std::sync::Arc;

use super::*;

const MAX: usize = 1024 * 1024;
const V5: Protocol = Protocol::V5;

fn decode(bytes: &[u8]) -> Result<Packet> {
    match check_as(bytes, MAX, V5)? {
        Some(n) => {
            assert_eq!(n, bytes.len(), "check must frame the whole input");
            parse_as(Bytes::copy_from_slice(bytes), V5)
        }
        None => panic!("incomplete: {bytes:02x?}"),
    }
}

fn round_trip(p: Packet) {
    let bytes = p.to_bytes_as(V5);
    assert_eq!(decode(&bytes), Ok(p), "{bytes:02x?}");
}

fn code_of(bytes: &[u8]) -> u8 {
    match decode(bytes) {
        Err(e) => e.reason_code(),
        Ok(p) => panic!("{bytes:02x?} decoded to {p:?}"),
    }
}

/// A v5 CONNECT for client id "x" with these CONNECT properties (keepalive 60, clean start).
fn connect_with(props: &[u8]) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        0x02,
        0,
        60,
        props.len() as u8,
    ];
    body.extend_from_slice(props);
    body.extend_from_slice(&[0, 1, b'x']);
    let mut v = vec![0x10, body.len() as u8];
    v.extend(body);
    v
}

#[test]
fn v5_connect_fields_and_defaults() {
    let Ok(Packet::Connect(c)) = decode(&connect_with(&[])) else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.protocol, Protocol::V5);
    assert_eq!(
        (c.session_expiry, c.receive_maximum, c.max_packet_size),
        (0, 65535, u32::MAX)
    );
    assert_eq!(c.topic_alias_max, 0);
    assert!(c.request_problem_info && !c.request_response_info);
    let props = [
        0x11, 0, 0, 0, 30, // session expiry 30
        0x21, 0, 10, // receive maximum 10
        0x27, 0, 0, 1, 0, // maximum packet size 256
        0x22, 0, 5, // topic alias maximum 5
        0x17, 0, // no problem information
        0x19, 1, // response information please
        0x26, 0, 1, b'k', 0, 1, b'v', // user property
    ];
    let Ok(Packet::Connect(c)) = decode(&connect_with(&props)) else {
        panic!("not a CONNECT");
    };
    assert_eq!(
        (c.session_expiry, c.receive_maximum, c.max_packet_size),
        (30, 10, 256)
    );
    assert_eq!(c.topic_alias_max, 5);
    assert!(!c.request_problem_info && c.request_response_info);
    assert_eq!(c.user, vec![("k".to_string(), "v".to_string())]);
}

#[test]
fn v5_connect_will_properties_and_password_without_user() {
    let mut c = Connect::v311("dev", false, 30);
    c.protocol = Protocol::V5;
    c.session_expiry = 300;
    c.password = Some(Bytes::from_static(b"pw"));
    c.will = Some(Will {
        topic: "dev/status".into(),
        payload: Bytes::from_static(b"gone"),
        qos: 1,
        retain: true,
        delay: 10,
        props: Some(Arc::new(MessageProps {
            content_type: Some("text/plain".into()),
            expiry: Some(60),
            ..MessageProps::default()
        })),
    });
    round_trip(Packet::Connect(c));
}

#[test]
fn property_errors_carry_reason_codes() {
    // Not allowed in CONNECT (topic alias), unknown id 0x7f: malformed.
    assert_eq!(code_of(&connect_with(&[0x23, 0, 1])), 0x81);
    assert_eq!(code_of(&connect_with(&[0x7f, 0])), 0x81);
    // Duplicate single-valued property: protocol error.
    assert_eq!(code_of(&connect_with(&[0x21, 0, 1, 0x21, 0, 2])), 0x82);
    // Receive maximum 0, maximum packet size 0, request problem info 2: protocol errors.
    assert_eq!(code_of(&connect_with(&[0x21, 0, 0])), 0x82);
    assert_eq!(code_of(&connect_with(&[0x27, 0, 0, 0, 0])), 0x82);
    assert_eq!(code_of(&connect_with(&[0x17, 2])), 0x82);
    // Bad UTF-8 in a user property: malformed.
    assert_eq!(
        code_of(&connect_with(&[0x26, 0, 1, 0xff, 0, 1, b'v'])),
        0x81
    );
    // Property length beyond the packet: malformed.
    let mut v = connect_with(&[]);
    v[12] = 40;
    assert_eq!(code_of(&v), 0x81);
    // Authentication data without a method.
    assert_eq!(code_of(&connect_with(&[0x16, 0, 1, 9])), 0x82);
    // User properties may repeat.
    assert!(decode(&connect_with(&[0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0])).is_ok());
}

#[test]
fn v5_publish_properties() {
    // Topic alias 0 is "topic alias invalid".
    assert_eq!(code_of(b"\x30\x07\x00\x01a\x03\x23\x00\x00"), 0x94);
    // An empty topic needs an alias.
    assert_eq!(code_of(b"\x30\x03\x00\x00\x00"), 0x82);
    let p = decode(b"\x30\x06\x00\x00\x03\x23\x00\x07").unwrap();
    assert!(matches!(p, Packet::Publish(ref p) if p.alias == 7 && p.topic.is_empty()));
    // Subscription identifier 0.
    assert_eq!(code_of(b"\x30\x06\x00\x01a\x02\x0b\x00"), 0x82);
    // Payload format indicator 2.
    assert_eq!(code_of(b"\x30\x06\x00\x01a\x02\x01\x02"), 0x82);
    // Several subscription identifiers are fine in a PUBLISH (to a client).
    let mut p = Publish::new("a/b".into(), Bytes::from_static(b"x"), 1, false, 3);
    p.sub_ids = vec![1, 200, 268_435_455];
    p.alias = 2;
    p.props = Some(Arc::new(MessageProps {
        payload_format: Some(1),
        expiry: Some(0),
        content_type: Some("c".into()),
        response_topic: Some("r/t".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
    }));
    round_trip(Packet::Publish(p));
    // No properties: a property length of 0 after the topic.
    let p = Publish::new("a".into(), Bytes::from_static(b"z"), 0, false, 0);
    assert_eq!(
        &Packet::Publish(p).to_bytes_as(V5)[..],
        b"\x30\x05\x00\x01a\x00z"
    );
}

#[test]
fn subscription_options() {
    // Filter "a", options: QoS 1, no local, retain as published, retain handling 2.
    let bytes = [0x82, 9, 0, 1, 2, 0x0b, 9, 0, 1, b'a', 0x2d];
    assert_eq!(
        decode(&bytes),
        Ok(Packet::Subscribe {
            pid: 1,
            sub_id: Some(9),
            filters: vec![(
                "a".into(),
                SubOptions {
                    qos: 1,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                }
            )],
            user: vec![],
        })
    );
    assert_eq!(
        Packet::Subscribe {
            pid: 1,
            sub_id: Some(9),
            filters: vec![(
                "a".into(),
                SubOptions {
                    qos: 1,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                }
            )],
            user: vec![],
        }
        .to_bytes_as(V5),
        Bytes::copy_from_slice(&bytes)
    );
    // Reserved bits: malformed; retain handling 3: protocol error; QoS 3: malformed.
    assert_eq!(code_of(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x40]), 0x81);
    assert_eq!(code_of(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30]), 0x82);
    assert_eq!(code_of(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x03]), 0x81);
    // Subscription identifier 0, and two of them.
    assert_eq!(code_of(&[0x82, 9, 0, 1, 2, 0x0b, 0, 0, 1, b'a', 0]), 0x82);
    assert_eq!(
        code_of(&[0x82, 11, 0, 1, 4, 0x0b, 1, 0x0b, 2, 0, 1, b'a', 0]),
        0x82
    );
    // A property SUBSCRIBE may not carry.
    assert_eq!(code_of(&[0x82, 9, 0, 1, 2, 0x01, 0, 0, 1, b'a', 0]), 0x81);
}

#[test]
fn acknowledgements_short_and_long_forms() {
    // Reason 0 without properties: the short form, in both directions.
    assert_eq!(&Packet::Puback(5).to_bytes_as(V5)[..], [0x40, 2, 0, 5]);
    assert_eq!(decode(&[0x40, 2, 0, 5]), Ok(Packet::Puback(5)));
    assert_eq!(decode(&[0x40, 3, 0, 5, 0]), Ok(Packet::Puback(5)));
    assert_eq!(decode(&[0x40, 4, 0, 5, 0, 0]), Ok(Packet::Puback(5)));
    let denied = Packet::ack(AckKind::Puback, 5, 0x87, None, vec![]);
    assert_eq!(&denied.to_bytes_as(V5)[..], [0x40, 3, 0, 5, 0x87]);
    // 3.1.1 never sees a reason code.
    assert_eq!(&denied.to_bytes()[..], [0x40, 2, 0, 5]);
    let with_reason = Packet::ack(AckKind::Pubrec, 6, 0x10, Some("none".into()), vec![]);
    assert_eq!(
        &with_reason.to_bytes_as(V5)[..],
        [0x50, 11, 0, 6, 0x10, 7, 0x1f, 0, 4, b'n', b'o', b'n', b'e']
    );
    round_trip(with_reason);
    round_trip(Packet::ack(AckKind::Pubrel, 7, 0x92, None, vec![]));
    round_trip(Packet::ack(
        AckKind::Pubcomp,
        8,
        0,
        None,
        vec![("k".into(), "v".into())],
    ));
    // A reason code PUBREL may not carry.
    assert_eq!(code_of(&[0x62, 3, 0, 7, 0x10]), 0x82);
}

#[test]
fn connack_suback_unsuback_disconnect_encodings() {
    let ok = Packet::Connack {
        session_present: false,
        code: 0,
        props: None,
    };
    assert_eq!(&ok.to_bytes_as(V5)[..], [0x20, 3, 0, 0, 0]);
    assert_eq!(&ok.to_bytes()[..], [0x20, 2, 0, 0]);
    let props = Properties {
        assigned_client_id: Some("id".into()),
        receive_maximum: Some(64),
        topic_alias_max: Some(16),
        ..Properties::default()
    };
    let ack = Packet::Connack {
        session_present: true,
        code: 0,
        props: Some(Box::new(props)),
    };
    assert_eq!(
        &ack.to_bytes_as(V5)[..],
        [0x20, 14, 1, 0, 11, 0x12, 0, 2, b'i', b'd', 0x21, 0, 64, 0x22, 0, 16]
    );
    round_trip(ack);
    let suback = Packet::Suback {
        pid: 3,
        codes: vec![1, 0x87],
    };
    assert_eq!(&suback.to_bytes_as(V5)[..], [0x90, 5, 0, 3, 0, 1, 0x87]);
    round_trip(suback);
    let unsuback = Packet::Unsuback {
        pid: 4,
        codes: vec![0, 0x11],
    };
    assert_eq!(&unsuback.to_bytes_as(V5)[..], [0xb0, 5, 0, 4, 0, 0, 0x11]);
    assert_eq!(&unsuback.to_bytes()[..], [0xb0, 2, 0, 4]);
    round_trip(unsuback);
    assert_eq!(&Packet::DISCONNECT.to_bytes_as(V5)[..], [0xe0, 0]);
    let d = Packet::Disconnect {
        reason: 0x8d,
        session_expiry: None,
        reason_string: None,
    };
    assert_eq!(&d.to_bytes_as(V5)[..], [0xe0, 1, 0x8d]);
    assert_eq!(&d.to_bytes()[..], [0xe0, 0]);
    round_trip(d);
    round_trip(Packet::Disconnect {
        reason: 0x04,
        session_expiry: Some(0),
        reason_string: Some("bye".into()),
    });
    assert_eq!(decode(&[0xe0, 2, 0, 0]), Ok(Packet::DISCONNECT));
    assert_eq!(code_of(&[0xe0, 1, 0x05]), 0x82);
}

#[test]
fn auth_is_decoded_under_v5_only() {
    assert_eq!(check(&[0xf0, 0], MAX), Err(DecodeError::UnknownType(15)));
    let bytes = [0xf0, 9, 0x18, 7, 0x15, 0, 4, b'S', b'C', b'R', b'M'];
    let Ok(Packet::Auth { reason, props }) = decode(&bytes) else {
        panic!("not AUTH");
    };
    assert_eq!((reason, props.auth_method.as_deref()), (0x18, Some("SCRM")));
    assert_eq!(&Packet::Auth { reason, props }.to_bytes_as(V5)[..], bytes);
    assert!(matches!(
        decode(&[0xf0, 0]),
        Ok(Packet::Auth { reason: 0, .. })
    ));
    assert_eq!(code_of(&[0xf0, 1, 0x01]), 0x82);
    assert_eq!(code_of(&[0xf1, 0]), 0x81);
}

#[test]
fn too_large_maps_to_0x95() {
    let e = check_as(&[0x30, 0x81, 0x01], 128, V5).unwrap_err();
    assert_eq!(e.reason_code(), 0x95);
}

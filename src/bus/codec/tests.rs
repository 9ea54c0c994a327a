use super::*;

const MAX: usize = 1024 * 1024;

fn decode(bytes: &[u8]) -> Result<Packet> {
    match check(bytes, MAX)? {
        Some(n) => {
            assert_eq!(n, bytes.len(), "check must frame the whole input");
            parse(Bytes::copy_from_slice(bytes))
        }
        None => panic!("incomplete: {bytes:02x?}"),
    }
}

fn round_trip(p: Packet) {
    let bytes = p.to_bytes();
    assert_eq!(decode(&bytes), Ok(p), "{bytes:02x?}");
}

fn connect() -> Connect {
    Connect {
        protocol: Protocol::V311,
        clean_session: true,
        keep_alive: 60,
        client_id: "dev-1".into(),
        will: None,
        username: None,
        password: None,
        ..Connect::v311("", true, 0)
    }
}

#[test]
fn round_trips_every_packet_type() {
    round_trip(Packet::Connect(connect()));
    round_trip(Packet::Connect(Connect {
        protocol: Protocol::V31,
        clean_session: false,
        keep_alive: 0,
        client_id: String::new(),
        will: Some(Will {
            topic: "a/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: 1,
            retain: true,
            delay: 0,
            props: None,
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"\x00secret")),
        ..Connect::v311("", false, 0)
    }));
    round_trip(Packet::Connack {
        session_present: true,
        code: 0,
        props: None,
    });
    for qos in 0..=2u8 {
        round_trip(Packet::Publish(Publish {
            dup: qos > 0,
            qos,
            retain: qos == 1,
            topic: "a/b".into(),
            pid: if qos > 0 { 7 } else { 0 },
            payload: Bytes::from(vec![0xab; 300]),
            props: None,
            alias: 0,
            sub_ids: vec![],
        }));
    }
    round_trip(Packet::Puback(1));
    round_trip(Packet::Pubrec(2));
    round_trip(Packet::Pubrel(3));
    round_trip(Packet::Pubcomp(65535));
    round_trip(Packet::Subscribe {
        pid: 9,
        filters: vec![
            ("a/#".into(), SubOptions::qos(1)),
            ("+/x".into(), SubOptions::qos(2)),
        ],
        sub_id: None,
        user: vec![],
    });
    round_trip(Packet::Suback {
        pid: 9,
        codes: vec![0, 1, 0x80],
    });
    round_trip(Packet::Unsubscribe {
        pid: 10,
        filters: vec!["a/#".into()],
    });
    round_trip(Packet::Unsuback {
        pid: 10,
        codes: vec![],
    });
    round_trip(Packet::Pingreq);
    round_trip(Packet::Pingresp);
    round_trip(Packet::DISCONNECT);
}

#[test]
fn encodes_exact_bytes() {
    assert_eq!(
        &Packet::Connack {
            session_present: false,
            code: 0,
            props: None,
        }
        .to_bytes()[..],
        [0x20, 2, 0, 0]
    );
    assert_eq!(&Packet::Puback(0x0102).to_bytes()[..], [0x40, 2, 1, 2]);
    assert_eq!(&Packet::Pubrel(5).to_bytes()[..], [0x62, 2, 0, 5]);
    let p = Packet::Publish(Publish {
        dup: false,
        qos: 0,
        retain: true,
        topic: "a/b".into(),
        pid: 0,
        payload: Bytes::from_static(b"hi"),
        props: None,
        alias: 0,
        sub_ids: vec![],
    });
    assert_eq!(&p.to_bytes()[..], b"\x31\x07\x00\x03a/bhi");
}

#[test]
fn remaining_length_uses_up_to_four_bytes() {
    let big = Packet::Publish(Publish {
        dup: false,
        qos: 0,
        retain: false,
        topic: "t".into(),
        pid: 0,
        payload: Bytes::from(vec![1; 20_000]),
        props: None,
        alias: 0,
        sub_ids: vec![],
    });
    let bytes = big.to_bytes();
    assert_eq!(&bytes[..4], [0x30, 0xa3, 0x9c, 0x01]); // 20003
    round_trip(big);
}

#[test]
fn check_waits_for_whole_frame() {
    let bytes = Packet::Subscribe {
        pid: 1,
        filters: vec![("a/b".into(), SubOptions::qos(0))],
        sub_id: None,
        user: vec![],
    }
    .to_bytes();
    for n in 0..bytes.len() {
        assert_eq!(check(&bytes[..n], MAX), Ok(None), "prefix {n}");
    }
    let mut two = bytes.to_vec();
    two.extend_from_slice(&[0xc0, 0]);
    assert_eq!(check(&two, MAX), Ok(Some(bytes.len())));
    // A remaining length still being received is incomplete, not an error.
    assert_eq!(check(&[0x30, 0xff, 0xff], MAX), Ok(None));
}

#[test]
fn rejects_fifth_length_byte_and_oversize() {
    assert_eq!(
        check(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
        Err(DecodeError::BadRemainingLength)
    );
    assert_eq!(
        check(&[0x30, 0x81, 0x01], 128),
        Err(DecodeError::TooLarge {
            size: 129,
            max: 128
        })
    );
    assert_eq!(check(&[0x30, 0x80, 0x01], 128), Ok(None));
}

#[test]
fn rejects_unknown_types() {
    assert_eq!(check(&[0x00, 0x00], MAX), Err(DecodeError::UnknownType(0)));
    assert_eq!(check(&[0xf0, 0x00], MAX), Err(DecodeError::UnknownType(15)));
}

#[test]
fn rejects_wrong_fixed_header_flags() {
    for bytes in [
        &[0x60, 2, 0, 1][..], // PUBREL must be 0010
        &[0x80, 5, 0, 1, 0, 0, 0],
        &[0xa0, 4, 0, 1, 0, 0],
        &[0x41, 2, 0, 1],
        &[0xc1, 0],
        &[0xe2, 0],
    ] {
        assert!(
            matches!(decode(bytes), Err(DecodeError::BadFlags { .. })),
            "{bytes:02x?}"
        );
    }
}

fn malformed(bytes: &[u8]) {
    assert!(
        matches!(decode(bytes), Err(DecodeError::Malformed(_))),
        "{bytes:02x?} -> {:?}",
        decode(bytes)
    );
}

fn connect_bytes(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x10,
        (10 + payload.len()) as u8,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        flags,
        0,
        60,
    ];
    v.extend_from_slice(payload);
    v
}

#[test]
fn connect_rules() {
    let id = [0u8, 1, b'x'];
    assert!(decode(&connect_bytes(0x02, &id)).is_ok());
    malformed(&connect_bytes(0x03, &id)); // reserved bit
    malformed(&connect_bytes(0x08, &id)); // will QoS without will flag
    malformed(&connect_bytes(0x20, &id)); // will retain without will flag
    let will = [0u8, 1, b'x', 0, 1, b'w', 0, 0];
    assert!(decode(&connect_bytes(0x0c, &will)).is_ok());
    malformed(&connect_bytes(0x1c, &will)); // will QoS 3
    malformed(&connect_bytes(0x40, &[0, 1, b'x', 0, 0])); // password without username
    malformed(&connect_bytes(0x02, &[0, 2, b'x'])); // truncated client id
    malformed(&connect_bytes(0x02, &[0, 1, b'x', 9])); // trailing byte
    malformed(&connect_bytes(0x04, &[0, 1, b'x', 0, 1, b'#', 0, 0])); // wildcard will topic
    malformed(&[
        0x10, 13, 0, 4, b'M', b'Q', b'X', b'X', 4, 2, 0, 0, 0, 1, b'x',
    ]);
}

#[test]
fn unsupported_level_is_its_own_error() {
    let mut v = connect_bytes(0x02, &[0, 1, b'x']);
    v[8] = 6;
    assert_eq!(decode(&v), Err(DecodeError::UnsupportedProtocolLevel(6)));
    let v31 = [
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 0, 0, 1, b'x',
    ];
    assert!(matches!(decode(&v31), Ok(Packet::Connect(c)) if c.protocol == Protocol::V31));
}

#[test]
fn publish_rules() {
    assert!(decode(b"\x30\x04\x00\x01ab").is_ok());
    malformed(b"\x36\x06\x00\x01a\x00\x01b"); // QoS 3
    malformed(b"\x38\x04\x00\x01ab"); // DUP on QoS 0
    malformed(b"\x30\x04\x00\x01+b"); // wildcard in topic name
    malformed(b"\x30\x02\x00\x00"); // empty topic
    malformed(b"\x30\x04\x00\x02\xc3\x28"); // invalid UTF-8
    malformed(b"\x30\x04\x00\x02a\x00"); // U+0000
    malformed(b"\x32\x05\x00\x01a\x00\x00"); // packet id 0
    malformed(b"\x32\x04\x00\x01a\x00"); // truncated packet id
    malformed(b"\x30\x03\x00\x05a"); // string longer than packet
}

#[test]
fn surrogate_code_points_are_invalid_utf8() {
    malformed(b"\x30\x05\x00\x03\xed\xa0\x80");
}

#[test]
fn subscribe_rules() {
    malformed(&[0x82, 2, 0, 1]); // no filters
    malformed(&[0x82, 6, 0, 1, 0, 1, b'a', 3]); // QoS 3
    malformed(&[0x82, 6, 0, 1, 0, 1, b'a', 0x04]); // reserved bits
    malformed(&[0x82, 5, 0, 1, 0, 1, b'a']); // missing QoS byte
    malformed(&[0xa2, 2, 0, 1]); // UNSUBSCRIBE without filters
                                 // Structurally invalid filters decode; the session answers 0x80 for them.
    assert!(decode(&[0x82, 7, 0, 1, 0, 2, b'a', b'#', 0]).is_ok());
}

#[test]
fn fixed_length_packets_reject_extra_bytes() {
    malformed(&[0x40, 3, 0, 1, 0]);
    malformed(&[0xc0, 1, 0]);
    malformed(&[0xe0, 1, 0]);
    malformed(&[0x40, 1, 0]);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20_000 {
        let len = rng.usize(0..40);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if let Some(b) = bytes.first_mut() {
            *b = (rng.u8(1..15) << 4) | (*b & 0x0f);
        }
        if let Ok(Some(n)) = check(&bytes, 64) {
            let _ = parse(Bytes::copy_from_slice(&bytes[..n]));
        }
    }
}

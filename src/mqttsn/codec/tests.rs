use super::*;

fn roundtrip(bytes: &[u8], want: Packet) {
    assert_eq!(decode(bytes), Ok(want.clone()), "decode {bytes:02x?}");
    assert_eq!(want.to_bytes(), bytes, "encode {want:?}");
}

#[test]
fn fixed_messages_at_spec_bytes() {
    roundtrip(
        &[0x05, 0x00, 0x01, 0x03, 0x84],
        Packet::Advertise {
            gw_id: 1,
            duration: 900,
        },
    );
    roundtrip(&[0x03, 0x01, 0x00], Packet::SearchGw { radius: 0 });
    roundtrip(
        &[0x03, 0x02, 0x07],
        Packet::GwInfo {
            gw_id: 7,
            gw_add: Bytes::new(),
        },
    );
    // CONNECT, clean session + will, keepalive 60 s, client id "c1".
    roundtrip(
        &[0x08, 0x04, 0x0C, 0x01, 0x00, 0x3C, b'c', b'1'],
        Packet::Connect {
            will: true,
            clean_session: true,
            duration: 60,
            client_id: "c1".into(),
        },
    );
    roundtrip(&[0x03, 0x05, 0x00], Packet::ConnAck(ReturnCode::Accepted));
    roundtrip(&[0x03, 0x05, 0x01], Packet::ConnAck(ReturnCode::Congestion));
    roundtrip(&[0x02, 0x06], Packet::WillTopicReq);
    roundtrip(&[0x02, 0x08], Packet::WillMsgReq);
    roundtrip(&[0x02, 0x07], Packet::WillTopic(None));
    // QoS 1, retained will on "a/b".
    roundtrip(
        &[0x06, 0x07, 0x30, b'a', b'/', b'b'],
        Packet::WillTopic(Some(WillTopic {
            qos: Qos::One,
            retain: true,
            topic: "a/b".into(),
        })),
    );
    roundtrip(
        &[0x05, 0x09, b'b', b'y', b'e'],
        Packet::WillMsg(Bytes::from_static(b"bye")),
    );
    roundtrip(
        &[0x09, 0x0A, 0x00, 0x01, 0x00, 0x02, b't', b'/', b'x'],
        Packet::Register {
            topic_id: 1,
            msg_id: 2,
            topic: "t/x".into(),
        },
    );
    roundtrip(
        &[0x07, 0x0B, 0x00, 0x01, 0x00, 0x02, 0x00],
        Packet::RegAck {
            topic_id: 1,
            msg_id: 2,
            rc: ReturnCode::Accepted,
        },
    );
    roundtrip(
        &[0x07, 0x0D, 0x00, 0x05, 0x12, 0x34, 0x02],
        Packet::PubAck {
            topic_id: 5,
            msg_id: 0x1234,
            rc: ReturnCode::InvalidTopicId,
        },
    );
    roundtrip(&[0x04, 0x0E, 0x00, 0x09], Packet::PubComp(9));
    roundtrip(&[0x04, 0x0F, 0x00, 0x09], Packet::PubRec(9));
    roundtrip(&[0x04, 0x10, 0x00, 0x09], Packet::PubRel(9));
    roundtrip(&[0x04, 0x15, 0x00, 0x09], Packet::UnsubAck(9));
    roundtrip(&[0x02, 0x16], Packet::PingReq(None));
    roundtrip(
        &[0x04, 0x16, b'c', b'1'],
        Packet::PingReq(Some("c1".into())),
    );
    roundtrip(&[0x02, 0x17], Packet::PingResp);
    roundtrip(&[0x02, 0x18], Packet::Disconnect(None));
    roundtrip(&[0x04, 0x18, 0x00, 0x3C], Packet::Disconnect(Some(60)));
    roundtrip(&[0x02, 0x1A], Packet::WillTopicUpd(None));
    roundtrip(
        &[0x03, 0x1B, 0x00],
        Packet::WillTopicResp(ReturnCode::Accepted),
    );
    roundtrip(
        &[0x04, 0x1C, b'o', b'k'],
        Packet::WillMsgUpd(Bytes::from_static(b"ok")),
    );
    roundtrip(
        &[0x03, 0x1D, 0x03],
        Packet::WillMsgResp(ReturnCode::NotSupported),
    );
}

#[test]
fn publish_flags_and_topic_kinds() {
    // QoS 1, DUP, normal id 1, msg id 2, "21.5".
    roundtrip(
        &[
            0x0B, 0x0C, 0xA0, 0x00, 0x01, 0x00, 0x02, b'2', b'1', b'.', b'5',
        ],
        Packet::Publish(Publish {
            dup: true,
            qos: Qos::One,
            retain: false,
            topic: TopicRef::Id(1),
            msg_id: 2,
            data: Bytes::from_static(b"21.5"),
        }),
    );
    // QoS -1, predefined id 0x0101.
    roundtrip(
        &[0x08, 0x0C, 0x61, 0x01, 0x01, 0x00, 0x00, b'7'],
        Packet::Publish(Publish {
            dup: false,
            qos: Qos::MinusOne,
            retain: false,
            topic: TopicRef::Predefined(0x0101),
            msg_id: 0,
            data: Bytes::from_static(b"7"),
        }),
    );
    // QoS 2, retained, short name "ab".
    roundtrip(
        &[0x07, 0x0C, 0x52, b'a', b'b', 0x00, 0x07],
        Packet::Publish(Publish {
            dup: false,
            qos: Qos::Two,
            retain: true,
            topic: TopicRef::Short(*b"ab"),
            msg_id: 7,
            data: Bytes::new(),
        }),
    );
}

#[test]
fn subscribe_forms() {
    roundtrip(
        &[0x08, 0x12, 0x20, 0x00, 0x03, b'a', b'/', b'#'],
        Packet::Subscribe {
            dup: false,
            qos: Qos::One,
            msg_id: 3,
            topic: SubTopic::Name("a/#".into()),
        },
    );
    roundtrip(
        &[0x07, 0x12, 0x01, 0x00, 0x03, 0x00, 0x05],
        Packet::Subscribe {
            dup: false,
            qos: Qos::Zero,
            msg_id: 3,
            topic: SubTopic::Predefined(5),
        },
    );
    roundtrip(
        &[0x07, 0x14, 0x02, 0x00, 0x03, b'x', b'y'],
        Packet::Unsubscribe {
            msg_id: 3,
            topic: SubTopic::Short(*b"xy"),
        },
    );
    roundtrip(
        &[0x08, 0x13, 0x40, 0x00, 0x00, 0x00, 0x03, 0x00],
        Packet::SubAck {
            qos: Qos::Two,
            topic_id: 0,
            msg_id: 3,
            rc: ReturnCode::Accepted,
        },
    );
}

#[test]
fn three_byte_length_form() {
    let data = Bytes::from(vec![0x5A; 300]);
    let p = Packet::Publish(Publish {
        dup: false,
        qos: Qos::Zero,
        retain: false,
        topic: TopicRef::Id(1),
        msg_id: 0,
        data,
    });
    let bytes = p.to_bytes();
    // 3 length bytes + type + flags + topic id + msg id + 300 = 309.
    assert_eq!(&bytes[..4], &[0x01, 0x01, 0x35, 0x0C]);
    assert_eq!(bytes.len(), 309);
    assert_eq!(decode(&bytes), Ok(p));
    // 255 bytes still fit the short form, 256 need the long one.
    let short = Packet::WillMsg(Bytes::from(vec![1; 253])).to_bytes();
    assert_eq!((short[0], short.len()), (255, 255));
    let long = Packet::WillMsg(Bytes::from(vec![1; 254])).to_bytes();
    assert_eq!(&long[..3], &[0x01, 0x01, 0x02]);
    // The long form for a small message is still a valid encoding.
    assert_eq!(decode(&[0x01, 0x00, 0x04, 0x17]), Ok(Packet::PingResp));
}

#[test]
fn forwarder_encapsulation() {
    // Encapsulated PINGREQ from wireless node 0xBEEF, radius 1.
    let bytes = [0x05, 0xFE, 0x01, 0xBE, 0xEF, 0x02, 0x16];
    let f = decode_frame(&bytes).unwrap();
    assert_eq!(
        f,
        Frame {
            forwarded: Some((1, Bytes::from_static(&[0xBE, 0xEF]))),
            packet: Packet::PingReq(None),
        }
    );
    let mut out = Vec::new();
    f.encode(&mut out);
    assert_eq!(out, bytes);
    assert_eq!(
        decode_frame(&[0x03, 0xFE, 0x00, 0x03, 0xFE, 0x00, 0x02, 0x16]),
        Err(DecodeError::NestedEncapsulation)
    );
    assert_eq!(
        decode_frame(&[0x03, 0xFE, 0x04, 0x02, 0x16]),
        Err(DecodeError::Invalid(
            "reserved bits of the encapsulation ctrl"
        ))
    );
}

#[test]
fn malformed_datagrams_are_errors() {
    let cases: &[(&[u8], DecodeError)] = &[
        (&[], DecodeError::Empty),
        (&[0x00], DecodeError::BadLength),
        (&[0x01, 0x00], DecodeError::BadLength),
        (&[0x01, 0x00, 0x02, 0x16], DecodeError::BadLength),
        (
            &[0x03, 0x16],
            DecodeError::LengthMismatch {
                declared: 3,
                actual: 2,
            },
        ),
        (&[0x02, 0x03], DecodeError::UnknownType(0x03)),
        (&[0x02, 0x19], DecodeError::UnknownType(0x19)),
        (&[0x02, 0xFF], DecodeError::UnknownType(0xFF)),
        (
            &[0x03, 0x17, 0x00],
            DecodeError::BadSize {
                msg_type: 0x17,
                expected: "2",
                actual: 3,
            },
        ),
        (&[0x03, 0x05, 0x04], DecodeError::ReturnCode(4)),
        (
            &[0x07, 0x04, 0x04, 0x02, 0x00, 0x3C, b'c'],
            DecodeError::ProtocolId(2),
        ),
        (
            &[0x06, 0x04, 0x04, 0x01, 0x00, 0x3C],
            DecodeError::BadSize {
                msg_type: 0x04,
                expected: "at least 7",
                actual: 6,
            },
        ),
        (
            &[0x07, 0x0C, 0x23, 0x00, 0x01, 0x00, 0x01],
            DecodeError::ReservedTopicIdType,
        ),
        (
            &[0x07, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x00],
            DecodeError::Invalid("QoS 1/2 PUBLISH with message id 0"),
        ),
        (
            &[0x06, 0x0A, 0x00, 0x01, 0x00, 0x02],
            DecodeError::BadSize {
                msg_type: 0x0A,
                expected: "at least 7",
                actual: 6,
            },
        ),
        (
            &[0x07, 0x0A, 0x00, 0x01, 0x00, 0x02, 0xFF],
            DecodeError::NotUtf8("topic name"),
        ),
        (
            &[0x05, 0x18, 0x00, 0x01, 0x02],
            DecodeError::BadSize {
                msg_type: 0x18,
                expected: "2 or 4",
                actual: 5,
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_frame(bytes).as_ref(), Err(want), "{bytes:02x?}");
    }
    let long_id = [&[0x1E, 0x04, 0x04, 0x01, 0x00, 0x3C][..], &[b'x'; 24]].concat();
    assert!(decode(&long_id).is_err(), "24-byte client id accepted");
}

#[test]
fn every_prefix_and_bitflip_of_valid_messages_decodes_without_panic() {
    let samples = [
        vec![
            0x0B, 0x0C, 0xA0, 0x00, 0x01, 0x00, 0x02, b'2', b'1', b'.', b'5',
        ],
        vec![0x08, 0x04, 0x0C, 0x01, 0x00, 0x3C, b'c', b'1'],
        vec![0x05, 0xFE, 0x01, 0xBE, 0xEF, 0x02, 0x16],
        vec![0x08, 0x12, 0x20, 0x00, 0x03, b'a', b'/', b'#'],
    ];
    for s in samples {
        for n in 0..=s.len() {
            let _ = decode_frame(&s[..n]);
        }
        for i in 0..s.len() {
            for bit in 0..8 {
                let mut m = s.clone();
                m[i] ^= 1 << bit;
                let _ = decode_frame(&m);
            }
        }
    }
}

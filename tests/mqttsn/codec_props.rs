//! Property tests of the codec: every message survives encode -> decode unchanged (both length
//! forms, with and without forwarder encapsulation), and no byte string makes the decoder panic.

use bytes::Bytes;
use edgegate::mqttsn::codec::*;
use proptest::prelude::*;

fn qos() -> impl Strategy<Value = Qos> {
    prop_oneof![
        Just(Qos::MinusOne),
        Just(Qos::Zero),
        Just(Qos::One),
        Just(Qos::Two)
    ]
}

fn rc() -> impl Strategy<Value = ReturnCode> {
    prop_oneof![
        Just(ReturnCode::Accepted),
        Just(ReturnCode::Congestion),
        Just(ReturnCode::InvalidTopicId),
        Just(ReturnCode::NotSupported)
    ]
}

/// Non-empty UTF-8 without NUL, up to `max` chars.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 1..=max)
        .prop_map(|v| v.into_iter().collect())
}

fn client_id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,23}"
}

fn data(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn will_topic() -> impl Strategy<Value = Option<WillTopic>> {
    proptest::option::of(
        (
            prop_oneof![Just(Qos::Zero), Just(Qos::One), Just(Qos::Two)],
            any::<bool>(),
            text(40),
        )
            .prop_map(|(qos, retain, topic)| WillTopic { qos, retain, topic }),
    )
}

fn topic_ref() -> impl Strategy<Value = TopicRef> {
    prop_oneof![
        any::<u16>().prop_map(TopicRef::Id),
        any::<u16>().prop_map(TopicRef::Predefined),
        any::<[u8; 2]>().prop_map(TopicRef::Short),
    ]
}

fn sub_topic() -> impl Strategy<Value = SubTopic> {
    prop_oneof![
        text(60).prop_map(SubTopic::Name),
        any::<u16>().prop_map(SubTopic::Predefined),
        any::<[u8; 2]>().prop_map(SubTopic::Short),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        (any::<u8>(), any::<u16>())
            .prop_map(|(gw_id, duration)| Packet::Advertise { gw_id, duration }),
        any::<u8>().prop_map(|radius| Packet::SearchGw { radius }),
        (any::<u8>(), data(16)).prop_map(|(gw_id, gw_add)| Packet::GwInfo { gw_id, gw_add }),
        (any::<bool>(), any::<bool>(), any::<u16>(), client_id()).prop_map(
            |(will, clean_session, duration, client_id)| Packet::Connect {
                will,
                clean_session,
                duration,
                client_id
            }
        ),
        rc().prop_map(Packet::ConnAck),
        Just(Packet::WillTopicReq),
        will_topic().prop_map(Packet::WillTopic),
        Just(Packet::WillMsgReq),
        data(300).prop_map(Packet::WillMsg),
        (any::<u16>(), any::<u16>(), text(80)).prop_map(|(topic_id, msg_id, topic)| {
            Packet::Register {
                topic_id,
                msg_id,
                topic,
            }
        }),
        (any::<u16>(), any::<u16>(), rc()).prop_map(|(topic_id, msg_id, rc)| Packet::RegAck {
            topic_id,
            msg_id,
            rc
        }),
        (
            any::<bool>(),
            qos(),
            any::<bool>(),
            topic_ref(),
            1..=u16::MAX,
            data(600)
        )
            .prop_map(
                |(dup, qos, retain, topic, msg_id, data)| Packet::Publish(Publish {
                    dup,
                    qos,
                    retain,
                    topic,
                    msg_id,
                    data
                })
            ),
        (any::<u16>(), any::<u16>(), rc()).prop_map(|(topic_id, msg_id, rc)| Packet::PubAck {
            topic_id,
            msg_id,
            rc
        }),
        any::<u16>().prop_map(Packet::PubComp),
        any::<u16>().prop_map(Packet::PubRec),
        any::<u16>().prop_map(Packet::PubRel),
        (any::<bool>(), qos(), any::<u16>(), sub_topic()).prop_map(|(dup, qos, msg_id, topic)| {
            Packet::Subscribe {
                dup,
                qos,
                msg_id,
                topic,
            }
        }),
        (qos(), any::<u16>(), any::<u16>(), rc()).prop_map(|(qos, topic_id, msg_id, rc)| {
            Packet::SubAck {
                qos,
                topic_id,
                msg_id,
                rc,
            }
        }),
        (any::<u16>(), sub_topic())
            .prop_map(|(msg_id, topic)| Packet::Unsubscribe { msg_id, topic }),
        any::<u16>().prop_map(Packet::UnsubAck),
        proptest::option::of(client_id()).prop_map(Packet::PingReq),
        Just(Packet::PingResp),
        proptest::option::of(any::<u16>()).prop_map(Packet::Disconnect),
        will_topic().prop_map(Packet::WillTopicUpd),
        rc().prop_map(Packet::WillTopicResp),
        data(300).prop_map(Packet::WillMsgUpd),
        rc().prop_map(Packet::WillMsgResp),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trip(p in packet(), fwd in proptest::option::of((0u8..=3, data(8)))) {
        // A QoS 0/-1 PUBLISH carries message id 0 in practice; any id must still round-trip.
        let frame = Frame { forwarded: fwd, packet: p };
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        prop_assert_eq!(decode_frame(&bytes), Ok(frame.clone()));
        if frame.forwarded.is_none() {
            prop_assert_eq!(decode(&bytes), Ok(frame.packet));
            // Short form up to 255 bytes, 3-byte form above.
            prop_assert_eq!(bytes[0] == 0x01, bytes.len() > 255);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        prop_assert_eq!(check_reencode(&bytes), Ok(()));
    }

    #[test]
    fn mutated_messages_never_panic(p in packet(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = p.to_bytes();
        let i = at % bytes.len();
        bytes[i] = byte;
        prop_assert_eq!(check_reencode(&bytes), Ok(()));
        bytes.truncate(cut % (bytes.len() + 1));
        prop_assert_eq!(check_reencode(&bytes), Ok(()));
    }
}

/// The fuzz target's corpus (seeds, and whatever a fuzzing run added and was committed).
#[test]
fn fuzz_corpus_replays_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/mqttsn_decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(check_reencode(&data), Ok(()), "{}", path.display());
        n += 1;
    }
    assert!(n >= 8, "only {n} corpus files in {}", dir.display());
}

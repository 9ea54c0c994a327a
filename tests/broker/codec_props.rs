//! Property tests of the MQTT codec: every packet survives encode -> decode unchanged under 3.1.1
//! and MQTT 5, and no byte string makes the decoder panic (or decode to something that does not
//! survive a second round).

use std::sync::Arc;

use bytes::Bytes;
use edgegate::bus::codec::*;
use edgegate::bus::MessageProps;
use proptest::prelude::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..=max)
        .prop_map(|v| v.into_iter().collect())
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}"
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![topic(), Just("#".to_string()), Just("a/+/c".to_string())]
}

fn data(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn user() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(6), text(6)), 0..3)
}

fn message_props() -> impl Strategy<Value = Option<Arc<MessageProps>>> {
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text(10)),
        proptest::option::of(topic()),
        proptest::option::of(data(8)),
        user(),
    )
        .prop_map(
            |(payload_format, expiry, content_type, response_topic, correlation_data, user)| {
                let m = MessageProps {
                    payload_format,
                    expiry,
                    content_type,
                    response_topic,
                    correlation_data,
                    user,
                };
                (m != MessageProps::default()).then(|| Arc::new(m))
            },
        )
}

fn qos() -> impl Strategy<Value = u8> {
    0u8..=2
}

fn will(v5: bool) -> impl Strategy<Value = Option<Will>> {
    proptest::option::of(
        (
            topic(),
            data(20),
            qos(),
            any::<bool>(),
            any::<u32>(),
            message_props(),
        )
            .prop_map(move |(topic, payload, qos, retain, delay, props)| Will {
                topic,
                payload,
                qos,
                retain,
                delay: if v5 { delay } else { 0 },
                props: if v5 { props } else { None },
            }),
    )
}

fn connect(protocol: Protocol) -> impl Strategy<Value = Connect> {
    let v5 = protocol == Protocol::V5;
    (
        (
            any::<bool>(),
            any::<u16>(),
            "[a-zA-Z0-9-]{0,23}",
            will(v5),
            proptest::option::of(text(8)),
            proptest::option::of(data(8)),
        ),
        (
            any::<u32>(),
            1u16..,
            1u32..,
            any::<u16>(),
            any::<bool>(),
            any::<bool>(),
            user(),
            proptest::option::of(text(6)),
        ),
    )
        .prop_map(
            move |(
                (clean, keep_alive, client_id, will, username, password),
                (expiry, recv_max, max_packet, alias_max, rri, rpi, user, auth_method),
            )| {
                let mut c = Connect::v311(&client_id, clean, keep_alive);
                c.protocol = protocol;
                c.will = will;
                c.username = username.clone();
                // 3.1.1 needs a user name with a password.
                c.password = password.filter(|_| v5 || username.is_some());
                if v5 {
                    c.session_expiry = expiry;
                    c.receive_maximum = recv_max;
                    c.max_packet_size = max_packet;
                    c.topic_alias_max = alias_max;
                    c.request_response_info = rri;
                    c.request_problem_info = rpi;
                    c.user = user;
                    c.auth_method = auth_method;
                }
                c
            },
        )
}

fn publish(v5: bool) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        1u16..,
        data(40),
        message_props(),
        any::<u16>(),
        proptest::collection::vec(1u32..=268_435_455, 0..3),
    )
        .prop_map(
            move |(qos, dup, retain, topic, pid, payload, props, alias, sub_ids)| {
                let mut p =
                    Publish::new(topic, payload, qos, retain, if qos > 0 { pid } else { 0 });
                p.dup = dup && qos > 0;
                if v5 {
                    p.props = props;
                    p.alias = alias;
                    p.sub_ids = sub_ids;
                    if alias != 0 && retain {
                        // The alias stands for the topic.
                        p.topic.clear();
                    }
                }
                p
            },
        )
}

fn sub_options(v5: bool) -> impl Strategy<Value = SubOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(move |(qos, nl, rap, rh)| {
        if v5 {
            SubOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubOptions::qos(qos)
        }
    })
}

fn ack_kind() -> impl Strategy<Value = AckKind> {
    prop_oneof![
        Just(AckKind::Puback),
        Just(AckKind::Pubrec),
        Just(AckKind::Pubrel),
        Just(AckKind::Pubcomp)
    ]
}

fn packet_v311() -> impl Strategy<Value = Packet> {
    prop_oneof![
        prop_oneof![Just(Protocol::V311), Just(Protocol::V31)]
            .prop_flat_map(connect)
            .prop_map(Packet::Connect),
        (any::<bool>(), 0u8..=5).prop_map(|(session_present, code)| Packet::Connack {
            session_present,
            code,
            props: None
        }),
        publish(false).prop_map(Packet::Publish),
        (ack_kind(), 1u16..).prop_map(|(k, pid)| Packet::ack(k, pid, 0, None, vec![])),
        (
            1u16..,
            proptest::collection::vec((filter(), sub_options(false)), 1..4)
        )
            .prop_map(|(pid, filters)| Packet::Subscribe {
                pid,
                sub_id: None,
                filters,
                user: vec![]
            }),
        (
            1u16..,
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)], 1..4)
        )
            .prop_map(|(pid, codes)| Packet::Suback { pid, codes }),
        (1u16.., proptest::collection::vec(filter(), 1..4))
            .prop_map(|(pid, filters)| Packet::Unsubscribe { pid, filters }),
        (1u16..).prop_map(|pid| Packet::Unsuback { pid, codes: vec![] }),
        Just(Packet::Pingreq),
        Just(Packet::Pingresp),
        Just(Packet::DISCONNECT),
    ]
}

fn packet_v5() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect(Protocol::V5).prop_map(Packet::Connect),
        (
            any::<bool>(),
            prop_oneof![Just(0u8), Just(0x85), Just(0x97)],
            proptest::option::of(text(8)),
            proptest::option::of(any::<u16>()),
            proptest::option::of(1u16..),
            user()
        )
            .prop_map(|(session_present, code, id, keep_alive, recv_max, user)| {
                let props = Properties {
                    assigned_client_id: id,
                    server_keep_alive: keep_alive,
                    receive_maximum: recv_max,
                    user,
                    ..Properties::default()
                };
                Packet::Connack {
                    session_present,
                    code,
                    props: (props != Properties::default()).then(|| Box::new(props)),
                }
            }),
        publish(true).prop_map(Packet::Publish),
        (
            ack_kind(),
            1u16..,
            prop_oneof![Just(0u8), Just(0x92)],
            proptest::option::of(text(8)),
            user()
        )
            .prop_map(|(k, pid, reason, rs, user)| {
                let reason = match (k, reason) {
                    (AckKind::Puback | AckKind::Pubrec, 0x92) => 0x87,
                    _ => reason,
                };
                Packet::ack(k, pid, reason, rs, user)
            }),
        (
            1u16..,
            proptest::option::of(1u32..=268_435_455),
            proptest::collection::vec((filter(), sub_options(true)), 1..4),
            user()
        )
            .prop_map(|(pid, sub_id, filters, user)| Packet::Subscribe {
                pid,
                sub_id,
                filters,
                user
            }),
        (
            1u16..,
            proptest::collection::vec(prop_oneof![Just(0u8), Just(2), Just(0x87)], 1..4)
        )
            .prop_map(|(pid, codes)| Packet::Suback { pid, codes }),
        (1u16.., proptest::collection::vec(filter(), 1..4))
            .prop_map(|(pid, filters)| Packet::Unsubscribe { pid, filters }),
        (
            1u16..,
            proptest::collection::vec(prop_oneof![Just(0u8), Just(0x11)], 1..4)
        )
            .prop_map(|(pid, codes)| Packet::Unsuback { pid, codes }),
        Just(Packet::Pingreq),
        Just(Packet::Pingresp),
        (
            prop_oneof![Just(0u8), Just(0x04), Just(0x8d), Just(0x93)],
            proptest::option::of(any::<u32>()),
            proptest::option::of(text(8))
        )
            .prop_map(
                |(reason, session_expiry, reason_string)| Packet::Disconnect {
                    reason,
                    session_expiry,
                    reason_string
                }
            ),
        (
            prop_oneof![Just(0u8), Just(0x18), Just(0x19)],
            proptest::option::of(text(6)),
            proptest::option::of(data(8))
        )
            .prop_map(|(reason, auth_method, auth_data)| Packet::Auth {
                reason,
                props: Box::new(Properties {
                    auth_method,
                    auth_data,
                    ..Properties::default()
                })
            }),
    ]
}

fn decode(bytes: &[u8], protocol: Protocol) -> Result<Packet, DecodeError> {
    match check_as(bytes, usize::MAX, protocol)? {
        Some(n) if n == bytes.len() => parse_as(Bytes::copy_from_slice(bytes), protocol),
        other => panic!("framed as {other:?}: {bytes:02x?}"),
    }
}

/// Whatever decodes must encode to something that decodes to the same packet.
fn check_reencode(bytes: &[u8], protocol: Protocol) -> Result<(), String> {
    let Ok(Some(n)) = check_as(bytes, 1 << 20, protocol) else {
        return Ok(());
    };
    let Ok(p) = parse_as(Bytes::copy_from_slice(&bytes[..n]), protocol) else {
        return Ok(());
    };
    // A CONNECT speaks its own protocol.
    let protocol = match &p {
        Packet::Connect(c) => c.protocol,
        _ => protocol,
    };
    let again = p.to_bytes_as(protocol);
    match parse_as(again.clone(), protocol) {
        Ok(q) if q == p => Ok(()),
        other => Err(format!(
            "{bytes:02x?} decoded to {p:?}, re-encoded as {again:02x?}, which decodes to {other:?}"
        )),
    }
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn v311_round_trip(p in packet_v311()) {
        let bytes = p.to_bytes();
        prop_assert_eq!(decode(&bytes, Protocol::V311), Ok(p));
    }

    #[test]
    fn v5_round_trip(p in packet_v5()) {
        let bytes = p.to_bytes_as(Protocol::V5);
        prop_assert_eq!(decode(&bytes, Protocol::V5), Ok(p));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        protocol in protocol(),
        first in 1u8..=15,
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = bytes;
        if let Some(b) = bytes.first_mut() {
            *b = (first << 4) | (*b & 0x0f);
        }
        prop_assert_eq!(check_reencode(&bytes, protocol), Ok(()));
    }

    #[test]
    fn mutated_v5_packets_never_panic(p in packet_v5(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = p.to_bytes_as(Protocol::V5).to_vec();
        let i = at % bytes.len();
        bytes[i] = byte;
        prop_assert_eq!(check_reencode(&bytes, Protocol::V5), Ok(()));
        bytes.truncate(cut % (bytes.len() + 1));
        prop_assert_eq!(check_reencode(&bytes, Protocol::V5), Ok(()));
    }
}

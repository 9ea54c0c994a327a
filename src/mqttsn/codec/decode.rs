//! Datagram -> message, strictly: every length and field checked, errors as values.

use bytes::Bytes;

use super::*;

/// Decodes one datagram (either form).
pub fn decode_frame(buf: &[u8]) -> Result<Frame> {
    let (len_size, declared) = header_len(buf)?;
    let msg_type = *buf.get(len_size).ok_or(DecodeError::BadLength)?;
    if msg_type != ENCAPSULATED {
        if declared != buf.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                actual: buf.len(),
            });
        }
        return Ok(Frame {
            forwarded: None,
            packet: decode(buf)?,
        });
    }
    // Encapsulation: Length covers the header only (length, 0xFE, ctrl, node id).
    if declared < len_size + 2 || declared > buf.len() {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: buf.len(),
        });
    }
    let ctrl = buf[len_size + 1];
    if ctrl & 0xFC != 0 {
        return Err(DecodeError::Invalid(
            "reserved bits of the encapsulation ctrl",
        ));
    }
    let node = Bytes::copy_from_slice(&buf[len_size + 2..declared]);
    let inner = &buf[declared..];
    if let Ok((s, _)) = header_len(inner) {
        if inner.get(s) == Some(&ENCAPSULATED) {
            return Err(DecodeError::NestedEncapsulation);
        }
    }
    let (_, inner_len) = header_len(inner)?;
    if inner_len != inner.len() {
        return Err(DecodeError::LengthMismatch {
            declared: inner_len,
            actual: inner.len(),
        });
    }
    Ok(Frame {
        forwarded: Some((ctrl, node)),
        packet: decode(inner)?,
    })
}

/// (size of the length field, declared length).
fn header_len(buf: &[u8]) -> Result<(usize, usize)> {
    match buf {
        [] => Err(DecodeError::Empty),
        [0x01, hi, lo, ..] => {
            let n = u16::from_be_bytes([*hi, *lo]) as usize;
            if n < 4 {
                return Err(DecodeError::BadLength);
            }
            Ok((3, n))
        }
        [0x01, ..] | [0x00, ..] => Err(DecodeError::BadLength),
        [n, ..] => Ok((1, *n as usize)),
    }
}

/// Decodes one non-encapsulated message whose length field matches `buf` exactly.
pub fn decode(buf: &[u8]) -> Result<Packet> {
    let (s, declared) = header_len(buf)?;
    if declared != buf.len() {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: buf.len(),
        });
    }
    let t = *buf.get(s).ok_or(DecodeError::BadLength)?;
    let b = &buf[s + 1..];
    let size = |expected: &'static str| DecodeError::BadSize {
        msg_type: t,
        expected,
        actual: buf.len(),
    };
    let exact = |n: usize, e: &'static str| if b.len() == n { Ok(()) } else { Err(size(e)) };
    let at_least = |n: usize, e: &'static str| if b.len() >= n { Ok(()) } else { Err(size(e)) };
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    Ok(match t {
        ADVERTISE => {
            exact(3, "5")?;
            Packet::Advertise {
                gw_id: b[0],
                duration: u16_at(1),
            }
        }
        SEARCHGW => {
            exact(1, "3")?;
            Packet::SearchGw { radius: b[0] }
        }
        GWINFO => {
            at_least(1, "at least 3")?;
            Packet::GwInfo {
                gw_id: b[0],
                gw_add: Bytes::copy_from_slice(&b[1..]),
            }
        }
        CONNECT => {
            at_least(5, "at least 7")?;
            let flags = Flags::decode(b[0])?;
            if b[1] != PROTOCOL_ID {
                return Err(DecodeError::ProtocolId(b[1]));
            }
            let client_id = utf8(&b[4..], "client id")?;
            if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID {
                return Err(DecodeError::Invalid("client id must be 1 to 23 bytes"));
            }
            Packet::Connect {
                will: flags.will,
                clean_session: flags.clean_session,
                duration: u16_at(2),
                client_id,
            }
        }
        CONNACK => {
            exact(1, "3")?;
            Packet::ConnAck(ReturnCode::from_byte(b[0])?)
        }
        WILLTOPICREQ => {
            exact(0, "2")?;
            Packet::WillTopicReq
        }
        WILLTOPIC | WILLTOPICUPD => {
            let wt = will_topic(b)?;
            if t == WILLTOPIC {
                Packet::WillTopic(wt)
            } else {
                Packet::WillTopicUpd(wt)
            }
        }
        WILLMSGREQ => {
            exact(0, "2")?;
            Packet::WillMsgReq
        }
        WILLMSG => Packet::WillMsg(Bytes::copy_from_slice(b)),
        WILLMSGUPD => Packet::WillMsgUpd(Bytes::copy_from_slice(b)),
        REGISTER => {
            at_least(5, "at least 7")?;
            let topic = utf8(&b[4..], "topic name")?;
            if topic.is_empty() {
                return Err(DecodeError::Invalid("empty topic name"));
            }
            Packet::Register {
                topic_id: u16_at(0),
                msg_id: u16_at(2),
                topic,
            }
        }
        REGACK | PUBACK => {
            exact(5, "7")?;
            let (topic_id, msg_id, rc) = (u16_at(0), u16_at(2), ReturnCode::from_byte(b[4])?);
            if t == REGACK {
                Packet::RegAck {
                    topic_id,
                    msg_id,
                    rc,
                }
            } else {
                Packet::PubAck {
                    topic_id,
                    msg_id,
                    rc,
                }
            }
        }
        PUBLISH => {
            at_least(5, "at least 7")?;
            let f = Flags::decode(b[0])?;
            let qos = f.qos.unwrap_or(Qos::Zero);
            let id_type = f.topic_id_type.unwrap_or(TopicIdType::Normal);
            let msg_id = u16_at(3);
            if matches!(qos, Qos::One | Qos::Two) && msg_id == 0 {
                return Err(DecodeError::Invalid("QoS 1/2 PUBLISH with message id 0"));
            }
            Packet::Publish(Publish {
                dup: f.dup,
                qos,
                retain: f.retain,
                topic: TopicRef::from_raw(id_type, [b[1], b[2]]),
                msg_id,
                data: Bytes::copy_from_slice(&b[5..]),
            })
        }
        PUBCOMP | PUBREC | PUBREL | UNSUBACK => {
            exact(2, "4")?;
            let id = u16_at(0);
            match t {
                PUBCOMP => Packet::PubComp(id),
                PUBREC => Packet::PubRec(id),
                PUBREL => Packet::PubRel(id),
                _ => Packet::UnsubAck(id),
            }
        }
        SUBSCRIBE | UNSUBSCRIBE => {
            at_least(4, "at least 6")?;
            let f = Flags::decode(b[0])?;
            let msg_id = u16_at(1);
            let rest = &b[3..];
            let topic = match f.topic_id_type.unwrap_or(TopicIdType::Normal) {
                TopicIdType::Normal => SubTopic::Name(utf8(rest, "topic name")?),
                TopicIdType::Predefined if rest.len() == 2 => {
                    SubTopic::Predefined(u16::from_be_bytes([rest[0], rest[1]]))
                }
                TopicIdType::Short if rest.len() == 2 => SubTopic::Short([rest[0], rest[1]]),
                _ => return Err(size("6 for a topic id or short name")),
            };
            if t == SUBSCRIBE {
                Packet::Subscribe {
                    dup: f.dup,
                    qos: f.qos.unwrap_or(Qos::Zero),
                    msg_id,
                    topic,
                }
            } else {
                Packet::Unsubscribe { msg_id, topic }
            }
        }
        SUBACK => {
            exact(6, "8")?;
            let f = Flags::decode(b[0])?;
            Packet::SubAck {
                qos: f.qos.unwrap_or(Qos::Zero),
                topic_id: u16_at(1),
                msg_id: u16_at(3),
                rc: ReturnCode::from_byte(b[5])?,
            }
        }
        PINGREQ => {
            if b.is_empty() {
                Packet::PingReq(None)
            } else {
                let id = utf8(b, "client id")?;
                if id.len() > MAX_CLIENT_ID {
                    return Err(DecodeError::Invalid("client id longer than 23 bytes"));
                }
                Packet::PingReq(Some(id))
            }
        }
        PINGRESP => {
            exact(0, "2")?;
            Packet::PingResp
        }
        DISCONNECT => match b.len() {
            0 => Packet::Disconnect(None),
            2 => Packet::Disconnect(Some(u16_at(0))),
            _ => return Err(size("2 or 4")),
        },
        WILLTOPICRESP | WILLMSGRESP => {
            exact(1, "3")?;
            let rc = ReturnCode::from_byte(b[0])?;
            if t == WILLTOPICRESP {
                Packet::WillTopicResp(rc)
            } else {
                Packet::WillMsgResp(rc)
            }
        }
        ENCAPSULATED => return Err(DecodeError::NestedEncapsulation),
        other => return Err(DecodeError::UnknownType(other)),
    })
}

fn will_topic(b: &[u8]) -> Result<Option<WillTopic>> {
    if b.is_empty() {
        return Ok(None);
    }
    let f = Flags::decode(b[0])?;
    let topic = utf8(&b[1..], "will topic")?;
    if topic.is_empty() {
        return Err(DecodeError::Invalid("empty will topic with flags"));
    }
    let qos = f.qos.unwrap_or(Qos::Zero);
    if qos == Qos::MinusOne {
        return Err(DecodeError::Invalid("will QoS -1"));
    }
    Ok(Some(WillTopic {
        qos,
        retain: f.retain,
        topic,
    }))
}

fn utf8(b: &[u8], what: &'static str) -> Result<String> {
    let s = std::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8(what))?;
    if s.contains('\0') {
        return Err(DecodeError::Invalid("U+0000 in a string"));
    }
    Ok(s.to_owned())
}

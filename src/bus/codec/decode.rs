//! Packet bodies, 3.1.1 and MQTT 5.

use std::sync::Arc;

use bytes::Bytes;

use super::props::{Allowed, Properties};
use super::{
    remaining_length, topic, AckKind, Connect, DecodeError, Packet, Protocol, Publish, Reader,
    Result, SubOptions, Will,
};

fn protocol_error(what: &'static str) -> DecodeError {
    DecodeError::Protocol { code: 0x82, what }
}

/// Reason codes each MQTT 5 packet may carry (spec 2.4); anything else is a protocol error.
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97,
    0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn reason(r: &mut Reader, valid: &[u8]) -> Result<u8> {
    let code = r.u8()?;
    if valid.contains(&code) {
        Ok(code)
    } else {
        Err(protocol_error("reason code not valid for this packet"))
    }
}

pub(super) fn parse(frame: Bytes, protocol: Protocol) -> Result<Packet> {
    let first = *frame.first().ok_or(DecodeError::Malformed("empty frame"))?;
    let (len, used) =
        remaining_length(&frame[1..])?.ok_or(DecodeError::Malformed("truncated header"))?;
    if frame.len() != 1 + used + len {
        return Err(DecodeError::Malformed("frame length mismatch"));
    }
    let ptype = first >> 4;
    let flags = first & 0x0f;
    let v5 = protocol.is_v5();
    let mut r = Reader(frame.slice(1 + used..));
    let expected_flags = match ptype {
        3 => flags,
        6 | 8 | 10 => 0b0010,
        1..=14 => 0,
        15 if v5 => 0,
        _ => return Err(DecodeError::UnknownType(ptype)),
    };
    if flags != expected_flags {
        return Err(DecodeError::BadFlags { ptype, flags });
    }
    let packet = match ptype {
        1 => Packet::Connect(parse_connect(&mut r)?),
        2 => {
            let ack = r.u8()?;
            if ack & 0xfe != 0 {
                return Err(DecodeError::Malformed("reserved CONNACK flags"));
            }
            let session_present = ack & 1 == 1;
            if v5 {
                let code = reason(&mut r, CONNACK_CODES)?;
                let props = Properties::read(&mut r, Allowed::CONNACK, false)?;
                Packet::Connack {
                    session_present,
                    code,
                    props: (props != Properties::default()).then(|| Box::new(props)),
                }
            } else {
                Packet::Connack {
                    session_present,
                    code: r.u8()?,
                    props: None,
                }
            }
        }
        3 => Packet::Publish(parse_publish(flags, &mut r, v5)?),
        4 => ack(&mut r, v5, AckKind::Puback)?,
        5 => ack(&mut r, v5, AckKind::Pubrec)?,
        6 => ack(&mut r, v5, AckKind::Pubrel)?,
        7 => ack(&mut r, v5, AckKind::Pubcomp)?,
        8 => parse_subscribe(&mut r, v5)?,
        9 => {
            let pid = r.pid()?;
            let valid: &[u8] = if v5 {
                Properties::read(&mut r, Allowed::ACK, false)?;
                SUBACK_CODES
            } else {
                &[0, 1, 2, 0x80]
            };
            let codes = r.rest().to_vec();
            if codes.is_empty() || codes.iter().any(|c| !valid.contains(c)) {
                return Err(DecodeError::Malformed("SUBACK return codes"));
            }
            Packet::Suback { pid, codes }
        }
        10 => {
            let pid = r.pid()?;
            if v5 {
                Properties::read(&mut r, Allowed::UNSUBSCRIBE, false)?;
            }
            let mut filters = Vec::new();
            while r.has_remaining() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Malformed("UNSUBSCRIBE without topic filters"));
            }
            Packet::Unsubscribe { pid, filters }
        }
        11 => {
            let pid = r.pid()?;
            let mut codes = Vec::new();
            if v5 {
                Properties::read(&mut r, Allowed::ACK, false)?;
                codes = r.rest().to_vec();
                if codes.is_empty() || codes.iter().any(|c| !UNSUBACK_CODES.contains(c)) {
                    return Err(DecodeError::Malformed("UNSUBACK reason codes"));
                }
            }
            Packet::Unsuback { pid, codes }
        }
        12 => Packet::Pingreq,
        13 => Packet::Pingresp,
        14 => {
            if v5 && r.has_remaining() {
                let reason = reason(&mut r, DISCONNECT_CODES)?;
                let props = if r.has_remaining() {
                    Properties::read(&mut r, Allowed::DISCONNECT, false)?
                } else {
                    Properties::default()
                };
                Packet::Disconnect {
                    reason,
                    session_expiry: props.session_expiry,
                    reason_string: props.reason_string,
                }
            } else {
                Packet::DISCONNECT
            }
        }
        _ => {
            let (reason, props) = if r.has_remaining() {
                let reason = reason(&mut r, AUTH_CODES)?;
                (reason, Properties::read(&mut r, Allowed::AUTH, false)?)
            } else {
                (0, Properties::default())
            };
            Packet::Auth {
                reason,
                props: Box::new(props),
            }
        }
    };
    if r.has_remaining() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    Ok(packet)
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP; under MQTT 5 with an optional reason code and properties.
fn ack(r: &mut Reader, v5: bool, kind: AckKind) -> Result<Packet> {
    let pid = r.pid()?;
    let (reason, props) = if v5 && r.has_remaining() {
        let valid = match kind {
            AckKind::Puback | AckKind::Pubrec => PUBACK_CODES,
            AckKind::Pubrel | AckKind::Pubcomp => PUBREL_CODES,
        };
        let reason = reason(r, valid)?;
        let props = if r.has_remaining() {
            Properties::read(r, Allowed::ACK, false)?
        } else {
            Properties::default()
        };
        (reason, props)
    } else {
        (0, Properties::default())
    };
    Ok(Packet::ack(
        kind,
        pid,
        reason,
        props.reason_string,
        props.user,
    ))
}

impl Packet {
    /// An acknowledgement: the plain variant for reason 0 without properties, else [`Packet::Ack`].
    pub fn ack(
        kind: AckKind,
        pid: u16,
        reason: u8,
        reason_string: Option<String>,
        user: Vec<(String, String)>,
    ) -> Packet {
        if reason == 0 && reason_string.is_none() && user.is_empty() {
            return match kind {
                AckKind::Puback => Packet::Puback(pid),
                AckKind::Pubrec => Packet::Pubrec(pid),
                AckKind::Pubrel => Packet::Pubrel(pid),
                AckKind::Pubcomp => Packet::Pubcomp(pid),
            };
        }
        Packet::Ack {
            kind,
            pid,
            reason,
            reason_string,
            user,
        }
    }
}

fn parse_subscribe(r: &mut Reader, v5: bool) -> Result<Packet> {
    let pid = r.pid()?;
    let (sub_id, user) = if v5 {
        let props = Properties::read(r, Allowed::SUBSCRIBE, false)?;
        (props.subscription_ids.first().copied(), props.user)
    } else {
        (None, Vec::new())
    };
    let mut filters = Vec::new();
    while r.has_remaining() {
        let filter = r.string()?;
        let b = r.u8()?;
        let qos = b & 0x03;
        if qos > 2 {
            return Err(DecodeError::Malformed("requested QoS"));
        }
        let opts = if v5 {
            if b & 0xc0 != 0 {
                return Err(DecodeError::Malformed("reserved subscription option bits"));
            }
            let retain_handling = (b >> 4) & 0x03;
            if retain_handling == 3 {
                return Err(protocol_error("retain handling 3"));
            }
            SubOptions {
                qos,
                no_local: b & 0x04 != 0,
                retain_as_published: b & 0x08 != 0,
                retain_handling,
            }
        } else {
            if b & 0xfc != 0 {
                return Err(DecodeError::Malformed("requested QoS"));
            }
            SubOptions::qos(qos)
        };
        filters.push((filter, opts));
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed("SUBSCRIBE without topic filters"));
    }
    Ok(Packet::Subscribe {
        pid,
        sub_id,
        filters,
        user,
    })
}

fn parse_connect(r: &mut Reader) -> Result<Connect> {
    let name = r.string()?;
    let level = r.u8()?;
    let protocol = match (name.as_str(), level) {
        ("MQTT", 4) => Protocol::V311,
        ("MQTT", 5) => Protocol::V5,
        ("MQIsdp", 3) => Protocol::V31,
        ("MQTT" | "MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::Malformed("protocol name")),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will QoS/retain without will flag"));
    }
    if will_qos == 3 {
        return Err(DecodeError::Malformed("will QoS 3"));
    }
    // MQTT 5 allows a password without a user name (3.1.2.9).
    if password_flag && !username_flag && !v5 {
        return Err(DecodeError::Malformed("password without username"));
    }
    let clean_session = flags & 0x02 != 0;
    let keep_alive = r.u16()?;
    let mut c = Connect::v311("", clean_session, keep_alive);
    c.protocol = protocol;
    if v5 {
        let p = Properties::read(r, Allowed::CONNECT, false)?;
        c.session_expiry = p.session_expiry.unwrap_or(0);
        c.receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
        c.max_packet_size = p.max_packet_size.unwrap_or(u32::MAX);
        c.topic_alias_max = p.topic_alias_max.unwrap_or(0);
        c.request_response_info = p.request_response_info == Some(1);
        c.request_problem_info = p.request_problem_info != Some(0);
        c.user = p.user;
        if p.auth_data.is_some() && p.auth_method.is_none() {
            return Err(protocol_error("authentication data without method"));
        }
        c.auth_method = p.auth_method;
    }
    // A 3.1 CONNECT may end before the client id; the session refuses it like an empty one.
    let id_missing = protocol == Protocol::V31 && !r.has_remaining();
    c.client_id = if id_missing {
        String::new()
    } else {
        r.string()?
    };
    if will_flag {
        let (delay, props) = if v5 {
            let mut p = Properties::read(r, Allowed::WILL, false)?;
            (p.will_delay.unwrap_or(0), p.take_message().map(Arc::new))
        } else {
            (0, None)
        };
        let topic = r.string()?;
        if !topic::valid_topic_name(&topic) {
            return Err(DecodeError::Malformed("will topic"));
        }
        c.will = Some(Will {
            topic,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            delay,
            props,
        });
    }
    if username_flag {
        c.username = Some(r.string()?);
    }
    if password_flag {
        c.password = Some(r.binary()?);
    }
    Ok(c)
}

fn parse_publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish> {
    let dup = flags & 0x08 != 0;
    let qos = (flags >> 1) & 0x03;
    let retain = flags & 0x01 != 0;
    if qos == 3 {
        return Err(DecodeError::Malformed("PUBLISH QoS 3"));
    }
    if qos == 0 && dup {
        return Err(DecodeError::Malformed("DUP set on QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    let pid = if qos > 0 { r.pid()? } else { 0 };
    let mut p = Publish::new(topic, Bytes::new(), qos, retain, pid);
    p.dup = dup;
    if v5 {
        let mut props = Properties::read(r, Allowed::PUBLISH, true)?;
        p.alias = props.topic_alias.unwrap_or(0);
        p.sub_ids = std::mem::take(&mut props.subscription_ids);
        p.props = props.take_message().map(Arc::new);
    }
    // MQTT 5: an empty topic name stands for the one the topic alias was set to.
    if !(topic::valid_topic_name(&p.topic) || v5 && p.topic.is_empty() && p.alias != 0) {
        return Err(if p.topic.is_empty() && v5 {
            protocol_error("empty topic name without topic alias")
        } else {
            DecodeError::Malformed("topic name")
        });
    }
    p.payload = r.rest();
    Ok(p)
}

//! Strict MQTT-SN 1.2 codec: every message type, the 3-byte length form and the forwarder
//! encapsulation. A datagram is one message; anything that breaks the spec's layout is a
//! [`DecodeError`] value (the gateway counts it against the sender and drops the datagram).

use bytes::Bytes;

pub const ADVERTISE: u8 = 0x00;
pub const SEARCHGW: u8 = 0x01;
pub const GWINFO: u8 = 0x02;
pub const CONNECT: u8 = 0x04;
pub const CONNACK: u8 = 0x05;
pub const WILLTOPICREQ: u8 = 0x06;
pub const WILLTOPIC: u8 = 0x07;
pub const WILLMSGREQ: u8 = 0x08;
pub const WILLMSG: u8 = 0x09;
pub const REGISTER: u8 = 0x0A;
pub const REGACK: u8 = 0x0B;
pub const PUBLISH: u8 = 0x0C;
pub const PUBACK: u8 = 0x0D;
pub const PUBCOMP: u8 = 0x0E;
pub const PUBREC: u8 = 0x0F;
pub const PUBREL: u8 = 0x10;
pub const SUBSCRIBE: u8 = 0x12;
pub const SUBACK: u8 = 0x13;
pub const UNSUBSCRIBE: u8 = 0x14;
pub const UNSUBACK: u8 = 0x15;
pub const PINGREQ: u8 = 0x16;
pub const PINGRESP: u8 = 0x17;
pub const DISCONNECT: u8 = 0x18;
pub const WILLTOPICUPD: u8 = 0x1A;
pub const WILLTOPICRESP: u8 = 0x1B;
pub const WILLMSGUPD: u8 = 0x1C;
pub const WILLMSGRESP: u8 = 0x1D;
pub const ENCAPSULATED: u8 = 0xFE;

/// CONNECT's protocol id for MQTT-SN 1.2.
pub const PROTOCOL_ID: u8 = 0x01;
/// Client ids are 1 to 23 characters (spec 5.4.4).
pub const MAX_CLIENT_ID: usize = 23;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty datagram")]
    Empty,
    #[error("length field says {declared} bytes, datagram has {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("3-byte length form declares less than 3 bytes")]
    BadLength,
    #[error("unknown or reserved message type {0:#04x}")]
    UnknownType(u8),
    #[error("message type {msg_type:#04x} must be {expected} bytes, got {actual}")]
    BadSize {
        msg_type: u8,
        expected: &'static str,
        actual: usize,
    },
    #[error("reserved topic id type 0b11")]
    ReservedTopicIdType,
    #[error("unsupported protocol id {0:#04x}")]
    ProtocolId(u8),
    #[error("invalid return code {0:#04x}")]
    ReturnCode(u8),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    #[error("encapsulated message nested in an encapsulation")]
    NestedEncapsulation,
}

type Result<T> = std::result::Result<T, DecodeError>;

/// QoS as the flags carry it; `MinusOne` is the connectionless "QoS -1" (0b11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    MinusOne,
    Zero,
    One,
    Two,
}

impl Qos {
    fn bits(self) -> u8 {
        match self {
            Qos::Zero => 0,
            Qos::One => 1,
            Qos::Two => 2,
            Qos::MinusOne => 3,
        }
    }

    fn from_bits(b: u8) -> Qos {
        match b & 3 {
            0 => Qos::Zero,
            1 => Qos::One,
            2 => Qos::Two,
            _ => Qos::MinusOne,
        }
    }

    /// The MQTT QoS on the bus: -1 and 0 are both 0.
    pub fn mqtt(self) -> u8 {
        match self {
            Qos::MinusOne | Qos::Zero => 0,
            Qos::One => 1,
            Qos::Two => 2,
        }
    }

    pub fn from_mqtt(q: u8) -> Qos {
        match q {
            0 => Qos::Zero,
            1 => Qos::One,
            _ => Qos::Two,
        }
    }
}

/// How the topic field of PUBLISH, SUBSCRIBE, UNSUBSCRIBE is to be read (flags bits 1..0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicIdType {
    /// PUBLISH: a registered id; SUBSCRIBE/UNSUBSCRIBE: a topic name.
    Normal,
    Predefined,
    Short,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub dup: bool,
    pub qos: Option<Qos>,
    pub retain: bool,
    pub will: bool,
    pub clean_session: bool,
    pub topic_id_type: Option<TopicIdType>,
}

impl Flags {
    pub fn encode(&self) -> u8 {
        let mut b = 0;
        if self.dup {
            b |= 0x80;
        }
        b |= self.qos.unwrap_or(Qos::Zero).bits() << 5;
        if self.retain {
            b |= 0x10;
        }
        if self.will {
            b |= 0x08;
        }
        if self.clean_session {
            b |= 0x04;
        }
        b |= match self.topic_id_type {
            None | Some(TopicIdType::Normal) => 0,
            Some(TopicIdType::Predefined) => 1,
            Some(TopicIdType::Short) => 2,
        };
        b
    }

    pub fn decode(b: u8) -> Result<Flags> {
        let topic_id_type = match b & 3 {
            0 => TopicIdType::Normal,
            1 => TopicIdType::Predefined,
            2 => TopicIdType::Short,
            _ => return Err(DecodeError::ReservedTopicIdType),
        };
        Ok(Flags {
            dup: b & 0x80 != 0,
            qos: Some(Qos::from_bits(b >> 5)),
            retain: b & 0x10 != 0,
            will: b & 0x08 != 0,
            clean_session: b & 0x04 != 0,
            topic_id_type: Some(topic_id_type),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnCode {
    Accepted,
    Congestion,
    InvalidTopicId,
    NotSupported,
}

impl ReturnCode {
    fn byte(self) -> u8 {
        match self {
            ReturnCode::Accepted => 0,
            ReturnCode::Congestion => 1,
            ReturnCode::InvalidTopicId => 2,
            ReturnCode::NotSupported => 3,
        }
    }

    fn from_byte(b: u8) -> Result<ReturnCode> {
        Ok(match b {
            0 => ReturnCode::Accepted,
            1 => ReturnCode::Congestion,
            2 => ReturnCode::InvalidTopicId,
            3 => ReturnCode::NotSupported,
            _ => return Err(DecodeError::ReturnCode(b)),
        })
    }
}

/// The topic field of PUBLISH: a 2-byte id (normal or predefined) or a 2-character short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Id(u16),
    Predefined(u16),
    Short([u8; 2]),
}

impl TopicRef {
    fn id_type(&self) -> TopicIdType {
        match self {
            TopicRef::Id(_) => TopicIdType::Normal,
            TopicRef::Predefined(_) => TopicIdType::Predefined,
            TopicRef::Short(_) => TopicIdType::Short,
        }
    }

    fn raw(&self) -> [u8; 2] {
        match self {
            TopicRef::Id(i) | TopicRef::Predefined(i) => i.to_be_bytes(),
            TopicRef::Short(s) => *s,
        }
    }

    fn from_raw(t: TopicIdType, raw: [u8; 2]) -> TopicRef {
        match t {
            TopicIdType::Normal => TopicRef::Id(u16::from_be_bytes(raw)),
            TopicIdType::Predefined => TopicRef::Predefined(u16::from_be_bytes(raw)),
            TopicIdType::Short => TopicRef::Short(raw),
        }
    }
}

/// The topic field of SUBSCRIBE/UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubTopic {
    Name(String),
    Predefined(u16),
    Short([u8; 2]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Advertise {
        gw_id: u8,
        duration: u16,
    },
    SearchGw {
        radius: u8,
    },
    GwInfo {
        gw_id: u8,
        /// Empty when the gateway itself answers.
        gw_add: Bytes,
    },
    Connect {
        will: bool,
        clean_session: bool,
        duration: u16,
        client_id: String,
    },
    ConnAck(ReturnCode),
    WillTopicReq,
    /// `None`: the empty WILLTOPIC that deletes the will.
    WillTopic(Option<WillTopic>),
    WillMsgReq,
    WillMsg(Bytes),
    Register {
        topic_id: u16,
        msg_id: u16,
        topic: String,
    },
    RegAck {
        topic_id: u16,
        msg_id: u16,
        rc: ReturnCode,
    },
    Publish(Publish),
    PubAck {
        topic_id: u16,
        msg_id: u16,
        rc: ReturnCode,
    },
    PubComp(u16),
    PubRec(u16),
    PubRel(u16),
    Subscribe {
        dup: bool,
        qos: Qos,
        msg_id: u16,
        topic: SubTopic,
    },
    SubAck {
        qos: Qos,
        topic_id: u16,
        msg_id: u16,
        rc: ReturnCode,
    },
    Unsubscribe {
        msg_id: u16,
        topic: SubTopic,
    },
    UnsubAck(u16),
    /// With the client id of a sleeping client that wakes up.
    PingReq(Option<String>),
    PingResp,
    /// With a sleep duration (seconds) for a client going to sleep.
    Disconnect(Option<u16>),
    WillTopicUpd(Option<WillTopic>),
    WillTopicResp(ReturnCode),
    WillMsgUpd(Bytes),
    WillMsgResp(ReturnCode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillTopic {
    pub qos: Qos,
    pub retain: bool,
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: Qos,
    pub retain: bool,
    pub topic: TopicRef,
    pub msg_id: u16,
    pub data: Bytes,
}

/// A datagram: a message, or a message a forwarder encapsulated for a wireless node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `Some((ctrl/radius byte, wireless node id))` for an encapsulated message.
    pub forwarded: Option<(u8, Bytes)>,
    pub packet: Packet,
}

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

/// Largest message the length field can describe.
pub const MAX_LEN: usize = 65_535;

impl Packet {
    /// Appends the encoded message: 1-byte length up to 255 bytes, the 3-byte form above.
    /// Callers keep bodies under [`MAX_LEN`]; a longer one is truncated by the length field.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(16);
        let t = self.encode_body(&mut body);
        put_len(out, body.len() + 1);
        out.push(t);
        out.extend_from_slice(&body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        self.encode(&mut v);
        v
    }

    fn encode_body(&self, b: &mut Vec<u8>) -> u8 {
        let u16b = |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_be_bytes());
        match self {
            Packet::Advertise { gw_id, duration } => {
                b.push(*gw_id);
                u16b(b, *duration);
                ADVERTISE
            }
            Packet::SearchGw { radius } => {
                b.push(*radius);
                SEARCHGW
            }
            Packet::GwInfo { gw_id, gw_add } => {
                b.push(*gw_id);
                b.extend_from_slice(gw_add);
                GWINFO
            }
            Packet::Connect {
                will,
                clean_session,
                duration,
                client_id,
            } => {
                let f = Flags {
                    will: *will,
                    clean_session: *clean_session,
                    ..Flags::default()
                };
                b.push(f.encode());
                b.push(PROTOCOL_ID);
                u16b(b, *duration);
                b.extend_from_slice(client_id.as_bytes());
                CONNECT
            }
            Packet::ConnAck(rc) => {
                b.push(rc.byte());
                CONNACK
            }
            Packet::WillTopicReq => WILLTOPICREQ,
            Packet::WillTopic(w) | Packet::WillTopicUpd(w) => {
                if let Some(w) = w {
                    let f = Flags {
                        qos: Some(w.qos),
                        retain: w.retain,
                        ..Flags::default()
                    };
                    b.push(f.encode());
                    b.extend_from_slice(w.topic.as_bytes());
                }
                if matches!(self, Packet::WillTopic(_)) {
                    WILLTOPIC
                } else {
                    WILLTOPICUPD
                }
            }
            Packet::WillMsgReq => WILLMSGREQ,
            Packet::WillMsg(m) => {
                b.extend_from_slice(m);
                WILLMSG
            }
            Packet::WillMsgUpd(m) => {
                b.extend_from_slice(m);
                WILLMSGUPD
            }
            Packet::Register {
                topic_id,
                msg_id,
                topic,
            } => {
                u16b(b, *topic_id);
                u16b(b, *msg_id);
                b.extend_from_slice(topic.as_bytes());
                REGISTER
            }
            Packet::RegAck {
                topic_id,
                msg_id,
                rc,
            }
            | Packet::PubAck {
                topic_id,
                msg_id,
                rc,
            } => {
                u16b(b, *topic_id);
                u16b(b, *msg_id);
                b.push(rc.byte());
                if matches!(self, Packet::RegAck { .. }) {
                    REGACK
                } else {
                    PUBACK
                }
            }
            Packet::Publish(p) => {
                let f = Flags {
                    dup: p.dup,
                    qos: Some(p.qos),
                    retain: p.retain,
                    topic_id_type: Some(p.topic.id_type()),
                    ..Flags::default()
                };
                b.push(f.encode());
                b.extend_from_slice(&p.topic.raw());
                u16b(b, p.msg_id);
                b.extend_from_slice(&p.data);
                PUBLISH
            }
            Packet::PubComp(id) => {
                u16b(b, *id);
                PUBCOMP
            }
            Packet::PubRec(id) => {
                u16b(b, *id);
                PUBREC
            }
            Packet::PubRel(id) => {
                u16b(b, *id);
                PUBREL
            }
            Packet::UnsubAck(id) => {
                u16b(b, *id);
                UNSUBACK
            }
            Packet::Subscribe {
                dup,
                qos,
                msg_id,
                topic,
            } => {
                sub_body(b, *dup, *qos, *msg_id, topic);
                SUBSCRIBE
            }
            Packet::Unsubscribe { msg_id, topic } => {
                sub_body(b, false, Qos::Zero, *msg_id, topic);
                UNSUBSCRIBE
            }
            Packet::SubAck {
                qos,
                topic_id,
                msg_id,
                rc,
            } => {
                let f = Flags {
                    qos: Some(*qos),
                    ..Flags::default()
                };
                b.push(f.encode());
                u16b(b, *topic_id);
                u16b(b, *msg_id);
                b.push(rc.byte());
                SUBACK
            }
            Packet::PingReq(id) => {
                if let Some(id) = id {
                    b.extend_from_slice(id.as_bytes());
                }
                PINGREQ
            }
            Packet::PingResp => PINGRESP,
            Packet::Disconnect(d) => {
                if let Some(d) = d {
                    u16b(b, *d);
                }
                DISCONNECT
            }
            Packet::WillTopicResp(rc) => {
                b.push(rc.byte());
                WILLTOPICRESP
            }
            Packet::WillMsgResp(rc) => {
                b.push(rc.byte());
                WILLMSGRESP
            }
        }
    }
}

fn sub_body(b: &mut Vec<u8>, dup: bool, qos: Qos, msg_id: u16, topic: &SubTopic) {
    let (id_type, raw): (TopicIdType, &[u8]) = match topic {
        SubTopic::Name(n) => (TopicIdType::Normal, n.as_bytes()),
        SubTopic::Predefined(_) => (TopicIdType::Predefined, &[]),
        SubTopic::Short(s) => (TopicIdType::Short, s),
    };
    let f = Flags {
        dup,
        qos: Some(qos),
        topic_id_type: Some(id_type),
        ..Flags::default()
    };
    b.push(f.encode());
    b.extend_from_slice(&msg_id.to_be_bytes());
    match topic {
        SubTopic::Predefined(id) => b.extend_from_slice(&id.to_be_bytes()),
        _ => b.extend_from_slice(raw),
    }
}

fn put_len(out: &mut Vec<u8>, body_and_type: usize) {
    if body_and_type < 255 {
        out.push((body_and_type + 1) as u8);
    } else {
        let total = (body_and_type + 3).min(MAX_LEN);
        out.push(0x01);
        out.extend_from_slice(&(total as u16).to_be_bytes());
    }
}

impl Frame {
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some((ctrl, node)) = &self.forwarded {
            put_len(out, node.len() + 2);
            out.push(ENCAPSULATED);
            out.push(*ctrl);
            out.extend_from_slice(node);
        }
        self.packet.encode(out);
    }
}

/// The fuzz target's property, shared with the tests that replay its corpus: decoding never
/// panics, and a decoded datagram re-encodes to bytes that decode to the same frame.
pub fn check_reencode(data: &[u8]) -> std::result::Result<(), String> {
    let Ok(frame) = decode_frame(data) else {
        return Ok(());
    };
    let mut out = Vec::new();
    frame.encode(&mut out);
    match decode_frame(&out) {
        Ok(again) if again == frame => Ok(()),
        other => Err(format!(
            "{data:02x?} decoded to {frame:?}, re-encoded as {out:02x?}, which decodes to {other:?}"
        )),
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;

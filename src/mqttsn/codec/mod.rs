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

mod decode;
mod encode;

pub use decode::{decode, decode_frame};

/// Largest message the length field can describe.
pub const MAX_LEN: usize = 65_535;

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
mod tests;

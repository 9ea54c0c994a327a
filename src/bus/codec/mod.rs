//! Strict MQTT 3.1.1 and 5.0 packet codec (also accepts the 3.1 `MQIsdp` CONNECT).
//!
//! Framing follows mini-redis' `Connection`: [`check`] cheaply says whether a whole packet is
//! buffered (and rejects a bad or oversized header early), then [`parse`] (3.1.1) or
//! [`parse_as`] decodes exactly that frame. Anything that breaks a normative rule of the spec is a
//! [`DecodeError`], which ends the connection it came from and nothing else; under MQTT 5 its
//! [`DecodeError::reason_code`] goes into the DISCONNECT first.
//!
//! - `props`: MQTT 5 properties; `decode`: packet bodies; `encode`: wire forms per protocol.

mod decode;
mod encode;
pub mod props;
pub mod reason;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use props::{connect_max_packet, Properties};

use super::topic;

/// Why a frame could not be decoded. Every variant closes the connection, except that
/// [`DecodeError::UnsupportedProtocolLevel`] on a CONNECT is answered with CONNACK 0x01 first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed remaining length")]
    BadRemainingLength,
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    #[error("invalid fixed header flags {flags:#06b} for packet type {ptype}")]
    BadFlags { ptype: u8, flags: u8 },
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// An MQTT 5 rule broken by a well-formed packet; `code` is the reason code to report
    /// (0x82 protocol error, 0x94 topic alias invalid).
    #[error("protocol error: {what}")]
    Protocol { code: u8, what: &'static str },
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) about this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::TooLarge { .. } => 0x95,
            DecodeError::UnsupportedProtocolLevel(_) => 0x84,
            DecodeError::Protocol { code, .. } => *code,
            _ => 0x81,
        }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// "MQIsdp", level 3.
    V31,
    /// "MQTT", level 4.
    V311,
    /// "MQTT", level 5.
    V5,
}

impl Protocol {
    pub fn is_v5(self) -> bool {
        self == Protocol::V5
    }
}

/// The MQTT 5 properties a message carries from its publisher to its subscribers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProps {
    pub payload_format: Option<u8>,
    /// Message expiry interval in seconds, as on the wire.
    pub expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user: Vec<(String, String)>,
    /// Set by the broker, never on the wire as such: the subscription identifiers of the
    /// subscriptions this copy is delivered for.
    pub sub_ids: Vec<u32>,
    /// Set by the broker when the message entered it: when `expiry` runs out.
    pub expires_at: Option<Instant>,
}

impl MessageProps {
    /// Starts the expiry clock of a message that has an expiry interval and no deadline yet.
    pub fn start_expiry(props: &mut Option<Arc<MessageProps>>, now: Instant) {
        if let Some(p) = props {
            if let (Some(secs), None) = (p.expiry, p.expires_at) {
                Arc::make_mut(p).expires_at = now.checked_add(Duration::from_secs(secs.into()));
            }
        }
    }

    /// Bytes of variable-size content: what a queue holding the message is charged for them.
    pub fn size(&self) -> usize {
        let s = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        s(&self.content_type)
            + s(&self.response_topic)
            + self.correlation_data.as_ref().map_or(0, Bytes::len)
            + self
                .user
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + 4 * self.sub_ids.len()
    }

    /// Whether the message expiry interval has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whole seconds of the expiry interval left (rounded up), when it has a deadline: what a
    /// forwarded PUBLISH carries, and what to persist.
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// Will delay interval in seconds (MQTT 5; 0 otherwise).
    pub delay: u32,
    pub props: Option<Arc<MessageProps>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: Protocol,
    /// Clean Start in MQTT 5.
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// 3.1.1: 0 with clean session, else `u32::MAX` (never expires).
    pub session_expiry: u32,
    /// 65535 when absent (and for 3.1.1).
    pub receive_maximum: u16,
    /// `u32::MAX` when absent.
    pub max_packet_size: u32,
    /// 0 when absent: no topic aliases toward the client.
    pub topic_alias_max: u16,
    pub request_response_info: bool,
    /// True when absent.
    pub request_problem_info: bool,
    pub user: Vec<(String, String)>,
    pub auth_method: Option<String>,
}

impl Connect {
    /// A 3.1.1 CONNECT with the MQTT 5 fields at what 3.1.1 implies.
    pub fn v311(client_id: &str, clean_session: bool, keep_alive: u16) -> Connect {
        Connect {
            protocol: Protocol::V311,
            clean_session,
            keep_alive,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            session_expiry: if clean_session { 0 } else { u32::MAX },
            receive_maximum: u16::MAX,
            max_packet_size: u32::MAX,
            topic_alias_max: 0,
            request_response_info: false,
            request_problem_info: true,
            user: Vec::new(),
            auth_method: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    /// Empty in MQTT 5 when `alias` stands for it.
    pub topic: String,
    /// 0 for QoS 0 (no packet id on the wire).
    pub pid: u16,
    pub payload: Bytes,
    /// MQTT 5 message properties.
    pub props: Option<Arc<MessageProps>>,
    /// MQTT 5 topic alias; 0 for none.
    pub alias: u16,
    /// MQTT 5 subscription identifiers (server to client only).
    pub sub_ids: Vec<u32>,
}

impl Publish {
    /// A PUBLISH without MQTT 5 extras.
    pub fn new(topic: String, payload: Bytes, qos: u8, retain: bool, pid: u16) -> Publish {
        Publish {
            dup: false,
            qos,
            retain,
            topic,
            pid,
            payload,
            props: None,
            alias: 0,
            sub_ids: Vec::new(),
        }
    }
}

/// MQTT 5 subscription options (3.1.1: only `qos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained messages on subscribe; 1: only for a new subscription; 2: never.
    pub retain_handling: u8,
}

impl SubOptions {
    pub fn qos(qos: u8) -> SubOptions {
        SubOptions {
            qos,
            ..SubOptions::default()
        }
    }
}

/// Which acknowledgement an [`Packet::Ack`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    Puback,
    Pubrec,
    Pubrel,
    Pubcomp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    Connack {
        session_present: bool,
        code: u8,
        /// MQTT 5 CONNACK properties; `None` for none (and always for 3.1.1).
        props: Option<Box<Properties>>,
    },
    Publish(Publish),
    /// Success without properties; also the MQTT 5 short form.
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    /// An MQTT 5 acknowledgement with a reason code or properties (decoding gives the plain
    /// variants above for reason 0 without properties; 3.1.1 encodes only the packet id).
    Ack {
        kind: AckKind,
        pid: u16,
        reason: u8,
        reason_string: Option<String>,
        user: Vec<(String, String)>,
    },
    Subscribe {
        pid: u16,
        /// MQTT 5 subscription identifier.
        sub_id: Option<u32>,
        filters: Vec<(String, SubOptions)>,
        user: Vec<(String, String)>,
    },
    /// Return codes (3.1.1) or reason codes (MQTT 5), one per filter.
    Suback {
        pid: u16,
        codes: Vec<u8>,
    },
    Unsubscribe {
        pid: u16,
        filters: Vec<String>,
    },
    /// `codes`: MQTT 5 reason codes, one per filter (empty and not sent for 3.1.1).
    Unsuback {
        pid: u16,
        codes: Vec<u8>,
    },
    Pingreq,
    Pingresp,
    /// 3.1.1: always reason 0 and no properties.
    Disconnect {
        reason: u8,
        session_expiry: Option<u32>,
        reason_string: Option<String>,
    },
    /// MQTT 5 AUTH.
    Auth {
        reason: u8,
        props: Box<Properties>,
    },
}

impl Packet {
    /// DISCONNECT with reason 0 and no properties (the only 3.1.1 form).
    pub const DISCONNECT: Packet = Packet::Disconnect {
        reason: 0,
        session_expiry: None,
        reason_string: None,
    };
}

/// Returns the total length of the first packet in `buf` if all of it is buffered, `None` if more
/// bytes are needed. Fails early on an unknown type, a 5-byte remaining length or a packet whose
/// remaining length exceeds `max_packet_size`. For a 3.1.1 connection (or before CONNECT).
pub fn check(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>> {
    check_as(buf, max_packet_size, Protocol::V311)
}

/// [`check`] for a connection speaking `protocol` (type 15, AUTH, exists only in MQTT 5).
pub fn check_as(buf: &[u8], max_packet_size: usize, protocol: Protocol) -> Result<Option<usize>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let ptype = first >> 4;
    if ptype == 0 || (ptype == 15 && !protocol.is_v5()) {
        return Err(DecodeError::UnknownType(ptype));
    }
    match remaining_length(&buf[1..])? {
        None => Ok(None),
        Some((len, used)) => {
            if len > max_packet_size {
                return Err(DecodeError::TooLarge {
                    size: len,
                    max: max_packet_size,
                });
            }
            let total = 1 + used + len;
            Ok((buf.len() >= total).then_some(total))
        }
    }
}

/// Decodes the variable-length remaining length: `(value, bytes used)`, or `None` if incomplete.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::BadRemainingLength)
}

/// Decodes one whole frame, as delimited by [`check`], of a 3.1.1 connection.
pub fn parse(frame: Bytes) -> Result<Packet> {
    parse_as(frame, Protocol::V311)
}

/// Decodes one whole frame of a connection speaking `protocol` (a CONNECT says its own).
pub fn parse_as(frame: Bytes, protocol: Protocol) -> Result<Packet> {
    decode::parse(frame, protocol)
}

/// The protocol level of a frame that looks like a CONNECT with protocol name "MQTT", even one
/// that does not decode: lets a broken MQTT 5 CONNECT be answered in MQTT 5.
pub fn connect_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    let (_, used) = remaining_length(&frame[1..]).ok()??;
    let body = frame.get(1 + used..)?;
    (body.get(..6)? == b"\x00\x04MQTT").then(|| body.get(6).copied())?
}

pub(crate) struct Reader(Bytes);

impl Reader {
    fn has_remaining(&self) -> bool {
        self.0.has_remaining()
    }

    fn u8(&mut self) -> Result<u8> {
        if self.0.remaining() < 1 {
            return Err(DecodeError::Malformed("truncated"));
        }
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16> {
        if self.0.remaining() < 2 {
            return Err(DecodeError::Malformed("truncated"));
        }
        Ok(self.0.get_u16())
    }

    fn u32(&mut self) -> Result<u32> {
        if self.0.remaining() < 4 {
            return Err(DecodeError::Malformed("truncated"));
        }
        Ok(self.0.get_u32())
    }

    /// A variable byte integer (at most 4 bytes).
    fn vbi(&mut self) -> Result<u32> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value += u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    fn take(&mut self, len: usize) -> Result<Bytes> {
        if self.0.remaining() < len {
            return Err(DecodeError::Malformed("truncated"));
        }
        Ok(self.0.split_to(len))
    }

    fn rest(&mut self) -> Bytes {
        self.0.split_off(0)
    }

    /// A packet identifier, which must be non-zero.
    fn pid(&mut self) -> Result<u16> {
        match self.u16()? {
            0 => Err(DecodeError::Malformed("packet identifier 0")),
            pid => Ok(pid),
        }
    }

    fn binary(&mut self) -> Result<Bytes> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A UTF-8 string: well-formed (no surrogates) and without U+0000, else the connection closes.
    fn string(&mut self) -> Result<String> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::Malformed("invalid UTF-8"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed("U+0000 in string"));
        }
        Ok(s.to_owned())
    }
}

fn header_with_len(out: &mut BytesMut, header: u8, len: usize) {
    out.put_u8(header);
    props::put_vbi(out, len as u32);
}

/// Callers only pass strings that were validated to fit a 16-bit length.
fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod v5_tests;

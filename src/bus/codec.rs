//! Strict MQTT 3.1.1 packet codec (also accepts the 3.1 `MQIsdp` CONNECT).
//!
//! Framing follows mini-redis' `Connection`: [`check`] cheaply says whether a whole packet is
//! buffered (and rejects a bad or oversized header early), then [`parse`] decodes exactly that
//! frame. Anything that breaks a normative rule of the spec is a [`DecodeError`], which ends the
//! connection it came from and nothing else.

use bytes::{Buf, BufMut, Bytes, BytesMut};

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
}

type Result<T> = std::result::Result<T, DecodeError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// "MQIsdp", level 3.
    V31,
    /// "MQTT", level 4.
    V311,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: Protocol,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    /// 0 for QoS 0 (no packet id on the wire).
    pub pid: u16,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    Connack {
        session_present: bool,
        code: u8,
    },
    Publish(Publish),
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    Subscribe {
        pid: u16,
        filters: Vec<(String, u8)>,
    },
    Suback {
        pid: u16,
        codes: Vec<u8>,
    },
    Unsubscribe {
        pid: u16,
        filters: Vec<String>,
    },
    Unsuback(u16),
    Pingreq,
    Pingresp,
    Disconnect,
}

/// Returns the total length of the first packet in `buf` if all of it is buffered, `None` if more
/// bytes are needed. Fails early on an unknown type, a 5-byte remaining length or a packet whose
/// remaining length exceeds `max_packet_size`.
pub fn check(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let ptype = first >> 4;
    if ptype == 0 || ptype == 15 {
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

/// Decodes one whole frame, as delimited by [`check`].
pub fn parse(frame: Bytes) -> Result<Packet> {
    let first = *frame.first().ok_or(DecodeError::Malformed("empty frame"))?;
    let (len, used) =
        remaining_length(&frame[1..])?.ok_or(DecodeError::Malformed("truncated header"))?;
    if frame.len() != 1 + used + len {
        return Err(DecodeError::Malformed("frame length mismatch"));
    }
    let ptype = first >> 4;
    let flags = first & 0x0f;
    let mut r = Reader(frame.slice(1 + used..));
    let expected_flags = match ptype {
        3 => flags,
        6 | 8 | 10 => 0b0010,
        1..=14 => 0,
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
            Packet::Connack {
                session_present: ack & 1 == 1,
                code: r.u8()?,
            }
        }
        3 => Packet::Publish(parse_publish(flags, &mut r)?),
        4 => Packet::Puback(r.pid()?),
        5 => Packet::Pubrec(r.pid()?),
        6 => Packet::Pubrel(r.pid()?),
        7 => Packet::Pubcomp(r.pid()?),
        8 => {
            let pid = r.pid()?;
            let mut filters = Vec::new();
            while r.has_remaining() {
                let filter = r.string()?;
                let qos = r.u8()?;
                if qos > 2 {
                    return Err(DecodeError::Malformed("requested QoS"));
                }
                filters.push((filter, qos));
            }
            if filters.is_empty() {
                return Err(DecodeError::Malformed("SUBSCRIBE without topic filters"));
            }
            Packet::Subscribe { pid, filters }
        }
        9 => {
            let pid = r.pid()?;
            let codes = r.0.split_off(0).to_vec();
            if codes.is_empty() || codes.iter().any(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
                return Err(DecodeError::Malformed("SUBACK return codes"));
            }
            Packet::Suback { pid, codes }
        }
        10 => {
            let pid = r.pid()?;
            let mut filters = Vec::new();
            while r.has_remaining() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Malformed("UNSUBSCRIBE without topic filters"));
            }
            Packet::Unsubscribe { pid, filters }
        }
        11 => Packet::Unsuback(r.pid()?),
        12 => Packet::Pingreq,
        13 => Packet::Pingresp,
        _ => Packet::Disconnect,
    };
    if r.has_remaining() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    Ok(packet)
}

fn parse_connect(r: &mut Reader) -> Result<Connect> {
    let name = r.string()?;
    let level = r.u8()?;
    let protocol = match (name.as_str(), level) {
        ("MQTT", 4) => Protocol::V311,
        ("MQIsdp", 3) => Protocol::V31,
        ("MQTT" | "MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::Malformed("protocol name")),
    };
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
    if password_flag && !username_flag {
        return Err(DecodeError::Malformed("password without username"));
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    let will = if will_flag {
        let topic = r.string()?;
        if !topic::valid_topic_name(&topic) {
            return Err(DecodeError::Malformed("will topic"));
        }
        Some(Will {
            topic,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

fn parse_publish(flags: u8, r: &mut Reader) -> Result<Publish> {
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
    if !topic::valid_topic_name(&topic) {
        return Err(DecodeError::Malformed("topic name"));
    }
    let pid = if qos > 0 { r.pid()? } else { 0 };
    let payload = r.0.split_off(0);
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        pid,
        payload,
    })
}

struct Reader(Bytes);

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

    /// A packet identifier, which must be non-zero.
    fn pid(&mut self) -> Result<u16> {
        match self.u16()? {
            0 => Err(DecodeError::Malformed("packet identifier 0")),
            pid => Ok(pid),
        }
    }

    fn binary(&mut self) -> Result<Bytes> {
        let len = usize::from(self.u16()?);
        if self.0.remaining() < len {
            return Err(DecodeError::Malformed("truncated"));
        }
        Ok(self.0.split_to(len))
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

impl Packet {
    /// Appends the wire form of this packet to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Packet::Connect(c) => encode_connect(c, out),
            Packet::Connack {
                session_present,
                code,
            } => {
                out.put_slice(&[0x20, 2, u8::from(*session_present), *code]);
            }
            Packet::Publish(p) => {
                let mut header = 0x30 | (p.qos << 1);
                if p.dup {
                    header |= 0x08;
                }
                if p.retain {
                    header |= 0x01;
                }
                let pid_len = if p.qos > 0 { 2 } else { 0 };
                header_with_len(out, header, 2 + p.topic.len() + pid_len + p.payload.len());
                put_str(out, &p.topic);
                if p.qos > 0 {
                    out.put_u16(p.pid);
                }
                out.put_slice(&p.payload);
            }
            Packet::Puback(pid) => ack(out, 0x40, *pid),
            Packet::Pubrec(pid) => ack(out, 0x50, *pid),
            Packet::Pubrel(pid) => ack(out, 0x62, *pid),
            Packet::Pubcomp(pid) => ack(out, 0x70, *pid),
            Packet::Subscribe { pid, filters } => {
                let len = 2 + filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
                header_with_len(out, 0x82, len);
                out.put_u16(*pid);
                for (f, qos) in filters {
                    put_str(out, f);
                    out.put_u8(*qos);
                }
            }
            Packet::Suback { pid, codes } => {
                header_with_len(out, 0x90, 2 + codes.len());
                out.put_u16(*pid);
                out.put_slice(codes);
            }
            Packet::Unsubscribe { pid, filters } => {
                let len = 2 + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
                header_with_len(out, 0xa2, len);
                out.put_u16(*pid);
                for f in filters {
                    put_str(out, f);
                }
            }
            Packet::Unsuback(pid) => ack(out, 0xb0, *pid),
            Packet::Pingreq => out.put_slice(&[0xc0, 0]),
            Packet::Pingresp => out.put_slice(&[0xd0, 0]),
            Packet::Disconnect => out.put_slice(&[0xe0, 0]),
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

fn encode_connect(c: &Connect, out: &mut BytesMut) {
    let (name, level) = match c.protocol {
        Protocol::V311 => ("MQTT", 4u8),
        Protocol::V31 => ("MQIsdp", 3u8),
    };
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    let mut len = 2 + name.len() + 4 + 2 + c.client_id.len();
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
        len += 4 + w.topic.len() + w.payload.len();
    }
    if let Some(u) = &c.username {
        flags |= 0x80;
        len += 2 + u.len();
    }
    if let Some(p) = &c.password {
        flags |= 0x40;
        len += 2 + p.len();
    }
    header_with_len(out, 0x10, len);
    put_str(out, name);
    out.put_u8(level);
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    put_str(out, &c.client_id);
    if let Some(w) = &c.will {
        put_str(out, &w.topic);
        out.put_u16(w.payload.len() as u16);
        out.put_slice(&w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u);
    }
    if let Some(p) = &c.password {
        out.put_u16(p.len() as u16);
        out.put_slice(p);
    }
}

fn ack(out: &mut BytesMut, header: u8, pid: u16) {
    out.put_u8(header);
    out.put_u8(2);
    out.put_u16(pid);
}

fn header_with_len(out: &mut BytesMut, header: u8, mut len: usize) {
    out.put_u8(header);
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if len == 0 {
            break;
        }
    }
}

/// Callers only pass strings that were validated to fit a 16-bit length.
fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;

//! MQTT 5 properties (spec 2.2.2): variable byte integers, every property identifier with its
//! type, and which packet may carry which. Decoding rejects a property the packet may not carry
//! or an unknown one (0x81), a second copy of a single-valued one (0x82), bad UTF-8 (0x81) and
//! values the spec forbids (0x82, a topic alias of 0: 0x94).

use bytes::{BufMut, Bytes, BytesMut};

use super::{DecodeError, MessageProps, Reader, Result};

pub const PAYLOAD_FORMAT: u8 = 0x01;
pub const MESSAGE_EXPIRY: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_ID: u8 = 0x0b;
pub const SESSION_EXPIRY: u8 = 0x11;
pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTH_METHOD: u8 = 0x15;
pub const AUTH_DATA: u8 = 0x16;
pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
pub const WILL_DELAY: u8 = 0x18;
pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
pub const RESPONSE_INFO: u8 = 0x1a;
pub const SERVER_REFERENCE: u8 = 0x1c;
pub const REASON_STRING: u8 = 0x1f;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAX: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAX_QOS: u8 = 0x24;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAX_PACKET_SIZE: u8 = 0x27;
pub const WILDCARD_AVAILABLE: u8 = 0x28;
pub const SUB_IDS_AVAILABLE: u8 = 0x29;
pub const SHARED_AVAILABLE: u8 = 0x2a;

const fn bits(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

/// Which properties each packet (or the will) may carry, as bit masks over the identifier.
#[derive(Debug, Clone, Copy)]
pub struct Allowed(u64);

impl Allowed {
    pub const CONNECT: Allowed = Allowed(bits(&[
        SESSION_EXPIRY,
        AUTH_METHOD,
        AUTH_DATA,
        REQUEST_PROBLEM_INFO,
        REQUEST_RESPONSE_INFO,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAX,
        USER_PROPERTY,
        MAX_PACKET_SIZE,
    ]));
    pub const WILL: Allowed = Allowed(bits(&[
        PAYLOAD_FORMAT,
        MESSAGE_EXPIRY,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        WILL_DELAY,
        USER_PROPERTY,
    ]));
    pub const CONNACK: Allowed = Allowed(bits(&[
        SESSION_EXPIRY,
        ASSIGNED_CLIENT_ID,
        SERVER_KEEP_ALIVE,
        AUTH_METHOD,
        AUTH_DATA,
        RESPONSE_INFO,
        SERVER_REFERENCE,
        REASON_STRING,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAX,
        MAX_QOS,
        RETAIN_AVAILABLE,
        USER_PROPERTY,
        MAX_PACKET_SIZE,
        WILDCARD_AVAILABLE,
        SUB_IDS_AVAILABLE,
        SHARED_AVAILABLE,
    ]));
    pub const PUBLISH: Allowed = Allowed(bits(&[
        PAYLOAD_FORMAT,
        MESSAGE_EXPIRY,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_ID,
        TOPIC_ALIAS,
        USER_PROPERTY,
    ]));
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, UNSUBSCRIBE (user properties only).
    pub const ACK: Allowed = Allowed(bits(&[REASON_STRING, USER_PROPERTY]));
    pub const SUBSCRIBE: Allowed = Allowed(bits(&[SUBSCRIPTION_ID, USER_PROPERTY]));
    pub const UNSUBSCRIBE: Allowed = Allowed(bits(&[USER_PROPERTY]));
    pub const DISCONNECT: Allowed = Allowed(bits(&[
        SESSION_EXPIRY,
        SERVER_REFERENCE,
        REASON_STRING,
        USER_PROPERTY,
    ]));
    pub const AUTH: Allowed = Allowed(bits(&[
        AUTH_METHOD,
        AUTH_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ]));

    fn has(self, id: u8) -> bool {
        id < 64 && self.0 & (1 << id) != 0
    }
}

/// Every MQTT 5 property, as one packet carried them (absent ones `None`/empty). The codec maps
/// them onto the typed packet fields; CONNACK and AUTH carry this struct as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format: Option<u8>,
    pub message_expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Several only in a PUBLISH sent to a client.
    pub subscription_ids: Vec<u32>,
    pub session_expiry: Option<u32>,
    pub assigned_client_id: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub auth_method: Option<String>,
    pub auth_data: Option<Bytes>,
    pub request_problem_info: Option<u8>,
    pub will_delay: Option<u32>,
    pub request_response_info: Option<u8>,
    pub response_info: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_max: Option<u16>,
    pub topic_alias: Option<u16>,
    pub max_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user: Vec<(String, String)>,
    pub max_packet_size: Option<u32>,
    pub wildcard_available: Option<u8>,
    pub sub_ids_available: Option<u8>,
    pub shared_available: Option<u8>,
}

fn protocol(what: &'static str) -> DecodeError {
    DecodeError::Protocol { code: 0x82, what }
}

fn set<T>(slot: &mut Option<T>, v: T, what: &'static str) -> Result<()> {
    if slot.is_some() {
        return Err(protocol(what));
    }
    *slot = Some(v);
    Ok(())
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader, what: &'static str) -> Result<u8> {
    match r.u8()? {
        b @ (0 | 1) => Ok(b),
        _ => Err(protocol(what)),
    }
}

impl Properties {
    /// Reads a property length and the properties it spans.
    pub(crate) fn read(r: &mut Reader, allowed: Allowed, sub_ids_many: bool) -> Result<Properties> {
        let len = r.vbi()? as usize;
        let mut body = Reader(r.take(len)?);
        let mut p = Properties::default();
        while body.has_remaining() {
            let id = body.vbi()?;
            let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("property identifier"))?;
            if !allowed.has(id) {
                return Err(DecodeError::Malformed(
                    "property not allowed in this packet",
                ));
            }
            let r = &mut body;
            match id {
                PAYLOAD_FORMAT => set(
                    &mut p.payload_format,
                    flag(r, "payload format indicator")?,
                    "duplicate payload format indicator",
                )?,
                MESSAGE_EXPIRY => set(
                    &mut p.message_expiry,
                    r.u32()?,
                    "duplicate message expiry interval",
                )?,
                CONTENT_TYPE => set(&mut p.content_type, r.string()?, "duplicate content type")?,
                RESPONSE_TOPIC => {
                    let t = r.string()?;
                    if !super::topic::valid_topic_name(&t) {
                        return Err(protocol("response topic"));
                    }
                    set(&mut p.response_topic, t, "duplicate response topic")?
                }
                CORRELATION_DATA => set(
                    &mut p.correlation_data,
                    r.binary()?,
                    "duplicate correlation data",
                )?,
                SUBSCRIPTION_ID => {
                    let v = r.vbi()?;
                    if v == 0 {
                        return Err(protocol("subscription identifier 0"));
                    }
                    if !sub_ids_many && !p.subscription_ids.is_empty() {
                        return Err(protocol("duplicate subscription identifier"));
                    }
                    p.subscription_ids.push(v);
                }
                SESSION_EXPIRY => set(
                    &mut p.session_expiry,
                    r.u32()?,
                    "duplicate session expiry interval",
                )?,
                ASSIGNED_CLIENT_ID => set(
                    &mut p.assigned_client_id,
                    r.string()?,
                    "duplicate assigned client identifier",
                )?,
                SERVER_KEEP_ALIVE => set(
                    &mut p.server_keep_alive,
                    r.u16()?,
                    "duplicate server keep alive",
                )?,
                AUTH_METHOD => set(
                    &mut p.auth_method,
                    r.string()?,
                    "duplicate authentication method",
                )?,
                AUTH_DATA => set(
                    &mut p.auth_data,
                    r.binary()?,
                    "duplicate authentication data",
                )?,
                REQUEST_PROBLEM_INFO => set(
                    &mut p.request_problem_info,
                    flag(r, "request problem information")?,
                    "duplicate request problem information",
                )?,
                WILL_DELAY => set(&mut p.will_delay, r.u32()?, "duplicate will delay interval")?,
                REQUEST_RESPONSE_INFO => set(
                    &mut p.request_response_info,
                    flag(r, "request response information")?,
                    "duplicate request response information",
                )?,
                RESPONSE_INFO => set(
                    &mut p.response_info,
                    r.string()?,
                    "duplicate response information",
                )?,
                SERVER_REFERENCE => set(
                    &mut p.server_reference,
                    r.string()?,
                    "duplicate server reference",
                )?,
                REASON_STRING => set(&mut p.reason_string, r.string()?, "duplicate reason string")?,
                RECEIVE_MAXIMUM => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(protocol("receive maximum 0"));
                    }
                    set(&mut p.receive_maximum, v, "duplicate receive maximum")?
                }
                TOPIC_ALIAS_MAX => set(
                    &mut p.topic_alias_max,
                    r.u16()?,
                    "duplicate topic alias maximum",
                )?,
                TOPIC_ALIAS => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol {
                            code: 0x94,
                            what: "topic alias 0",
                        });
                    }
                    set(&mut p.topic_alias, v, "duplicate topic alias")?
                }
                MAX_QOS => set(
                    &mut p.max_qos,
                    flag(r, "maximum QoS")?,
                    "duplicate maximum QoS",
                )?,
                RETAIN_AVAILABLE => set(
                    &mut p.retain_available,
                    flag(r, "retain available")?,
                    "duplicate retain available",
                )?,
                USER_PROPERTY => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user.push((k, v));
                }
                MAX_PACKET_SIZE => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(protocol("maximum packet size 0"));
                    }
                    set(&mut p.max_packet_size, v, "duplicate maximum packet size")?
                }
                WILDCARD_AVAILABLE => set(
                    &mut p.wildcard_available,
                    flag(r, "wildcard subscription available")?,
                    "duplicate wildcard subscription available",
                )?,
                SUB_IDS_AVAILABLE => set(
                    &mut p.sub_ids_available,
                    flag(r, "subscription identifiers available")?,
                    "duplicate subscription identifiers available",
                )?,
                SHARED_AVAILABLE => set(
                    &mut p.shared_available,
                    flag(r, "shared subscription available")?,
                    "duplicate shared subscription available",
                )?,
                _ => return Err(DecodeError::Malformed("unknown property identifier")),
            }
        }
        Ok(p)
    }

    /// Moves the message properties out (`None` when there are none).
    pub fn take_message(&mut self) -> Option<MessageProps> {
        let m = MessageProps {
            payload_format: self.payload_format.take(),
            expiry: self.message_expiry.take(),
            content_type: self.content_type.take(),
            response_topic: self.response_topic.take(),
            correlation_data: self.correlation_data.take(),
            user: std::mem::take(&mut self.user),
            ..MessageProps::default()
        };
        (m != MessageProps::default()).then_some(m)
    }

    /// Writes every present property (without the length) into `body`.
    pub fn put(&self, body: &mut BytesMut) {
        put_u8(body, PAYLOAD_FORMAT, self.payload_format);
        put_u32(body, MESSAGE_EXPIRY, self.message_expiry);
        put_string(body, CONTENT_TYPE, self.content_type.as_deref());
        put_string(body, RESPONSE_TOPIC, self.response_topic.as_deref());
        put_binary(body, CORRELATION_DATA, self.correlation_data.as_deref());
        for id in &self.subscription_ids {
            body.put_u8(SUBSCRIPTION_ID);
            put_vbi(body, *id);
        }
        put_u32(body, SESSION_EXPIRY, self.session_expiry);
        put_string(body, ASSIGNED_CLIENT_ID, self.assigned_client_id.as_deref());
        put_u16(body, SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_string(body, AUTH_METHOD, self.auth_method.as_deref());
        put_binary(body, AUTH_DATA, self.auth_data.as_deref());
        put_u8(body, REQUEST_PROBLEM_INFO, self.request_problem_info);
        put_u32(body, WILL_DELAY, self.will_delay);
        put_u8(body, REQUEST_RESPONSE_INFO, self.request_response_info);
        put_string(body, RESPONSE_INFO, self.response_info.as_deref());
        put_string(body, SERVER_REFERENCE, self.server_reference.as_deref());
        put_string(body, REASON_STRING, self.reason_string.as_deref());
        put_u16(body, RECEIVE_MAXIMUM, self.receive_maximum);
        put_u16(body, TOPIC_ALIAS_MAX, self.topic_alias_max);
        put_u16(body, TOPIC_ALIAS, self.topic_alias);
        put_u8(body, MAX_QOS, self.max_qos);
        put_u8(body, RETAIN_AVAILABLE, self.retain_available);
        put_user(body, &self.user);
        put_u32(body, MAX_PACKET_SIZE, self.max_packet_size);
        put_u8(body, WILDCARD_AVAILABLE, self.wildcard_available);
        put_u8(body, SUB_IDS_AVAILABLE, self.sub_ids_available);
        put_u8(body, SHARED_AVAILABLE, self.shared_available);
    }
}

/// Writes a message's properties (without the length) into `body`.
pub fn put_message(body: &mut BytesMut, m: &MessageProps) {
    put_u8(body, PAYLOAD_FORMAT, m.payload_format);
    put_u32(body, MESSAGE_EXPIRY, m.expiry);
    put_string(body, CONTENT_TYPE, m.content_type.as_deref());
    put_string(body, RESPONSE_TOPIC, m.response_topic.as_deref());
    put_binary(body, CORRELATION_DATA, m.correlation_data.as_deref());
    put_user(body, &m.user);
}

pub fn put_u8(body: &mut BytesMut, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        body.put_slice(&[id, v]);
    }
}

pub fn put_u16(body: &mut BytesMut, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        body.put_u8(id);
        body.put_u16(v);
    }
}

pub fn put_u32(body: &mut BytesMut, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        body.put_u8(id);
        body.put_u32(v);
    }
}

pub fn put_string(body: &mut BytesMut, id: u8, v: Option<&str>) {
    put_binary(body, id, v.map(str::as_bytes));
}

pub fn put_binary(body: &mut BytesMut, id: u8, v: Option<&[u8]>) {
    if let Some(v) = v {
        body.put_u8(id);
        body.put_u16(v.len() as u16);
        body.put_slice(v);
    }
}

pub fn put_user(body: &mut BytesMut, user: &[(String, String)]) {
    for (k, v) in user {
        body.put_u8(USER_PROPERTY);
        super::put_str(body, k);
        super::put_str(body, v);
    }
}

/// A variable byte integer (values up to 268,435,455).
pub fn put_vbi(out: &mut BytesMut, mut v: u32) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

/// Bytes a variable byte integer takes.
pub fn vbi_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The Maximum Packet Size of an MQTT 5 CONNECT that did not decode, if it is among the
/// properties that come before the problem: the CONNACK that refuses the CONNECT must fit it too
/// (MQTT-3.1.2-24). Properties are skipped by their wire type, unchecked.
pub fn connect_max_packet(frame: &[u8]) -> Option<u32> {
    if super::connect_level(frame)? != 5 {
        return None;
    }
    let (_, used) = super::remaining_length(&frame[1..]).ok()??;
    // Protocol name (6 bytes), level, flags, keepalive.
    let body = frame.get(1 + used + 10..)?;
    let mut r = Reader(Bytes::copy_from_slice(body));
    let len = r.vbi().ok()? as usize;
    let mut p = Reader(r.take(len.min(r.0.len())).ok()?);
    while p.has_remaining() {
        let skipped = match u8::try_from(p.vbi().ok()?).ok()? {
            MAX_PACKET_SIZE => return p.u32().ok().filter(|&m| m != 0),
            PAYLOAD_FORMAT
            | REQUEST_PROBLEM_INFO
            | REQUEST_RESPONSE_INFO
            | MAX_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_AVAILABLE
            | SUB_IDS_AVAILABLE
            | SHARED_AVAILABLE => p.u8().map(drop),
            SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAX | TOPIC_ALIAS => {
                p.u16().map(drop)
            }
            MESSAGE_EXPIRY | SESSION_EXPIRY | WILL_DELAY => p.u32().map(drop),
            SUBSCRIPTION_ID => p.vbi().map(drop),
            USER_PROPERTY => p.binary().and_then(|_| p.binary()).map(drop),
            CONTENT_TYPE | RESPONSE_TOPIC | CORRELATION_DATA | ASSIGNED_CLIENT_ID | AUTH_METHOD
            | AUTH_DATA | RESPONSE_INFO | SERVER_REFERENCE | REASON_STRING => p.binary().map(drop),
            _ => return None,
        };
        skipped.ok()?;
    }
    None
}

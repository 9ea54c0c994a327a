//! Wire forms. A packet encodes as 3.1.1 or as MQTT 5 depending on the connection's protocol;
//! the MQTT 5 acknowledgements and DISCONNECT use their short forms when they can.

use bytes::{BufMut, Bytes, BytesMut};

use super::props::{self, put_vbi, vbi_len, Properties};
use super::{header_with_len, put_str, AckKind, Connect, Packet, Protocol, Publish};

impl Packet {
    /// Appends the 3.1.1 wire form of this packet to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_as(Protocol::V311, out)
    }

    /// Appends the wire form for a connection speaking `protocol` to `out`.
    pub fn encode_as(&self, protocol: Protocol, out: &mut BytesMut) {
        let v5 = protocol.is_v5();
        match self {
            Packet::Connect(c) => encode_connect(c, out),
            Packet::Connack {
                session_present,
                code,
                props,
            } => {
                if v5 {
                    let body = props_body(props.as_deref());
                    header_with_len(out, 0x20, 2 + vbi_len(body.len()) + body.len());
                    out.put_slice(&[u8::from(*session_present), *code]);
                    put_props(out, &body);
                } else {
                    // In 3.1 the first byte is reserved: no session-present flag.
                    let flags = u8::from(*session_present && protocol != Protocol::V31);
                    out.put_slice(&[0x20, 2, flags, *code]);
                }
            }
            Packet::Publish(p) => encode_publish(p, v5, out),
            Packet::Puback(pid) => ack(out, 0x40, *pid),
            Packet::Pubrec(pid) => ack(out, 0x50, *pid),
            Packet::Pubrel(pid) => ack(out, 0x62, *pid),
            Packet::Pubcomp(pid) => ack(out, 0x70, *pid),
            Packet::Ack {
                kind,
                pid,
                reason,
                reason_string,
                user,
            } => {
                let header = match kind {
                    AckKind::Puback => 0x40,
                    AckKind::Pubrec => 0x50,
                    AckKind::Pubrel => 0x62,
                    AckKind::Pubcomp => 0x70,
                };
                let body = reason_props(reason_string.as_deref(), user);
                if !v5 || (*reason == 0 && body.is_empty()) {
                    ack(out, header, *pid);
                } else if body.is_empty() {
                    out.put_slice(&[header, 3]);
                    out.put_u16(*pid);
                    out.put_u8(*reason);
                } else {
                    header_with_len(out, header, 3 + vbi_len(body.len()) + body.len());
                    out.put_u16(*pid);
                    out.put_u8(*reason);
                    put_props(out, &body);
                }
            }
            Packet::Subscribe {
                pid,
                sub_id,
                filters,
                user,
            } => {
                let body = if v5 {
                    let p = Properties {
                        subscription_ids: sub_id.iter().copied().collect(),
                        user: user.clone(),
                        ..Properties::default()
                    };
                    Some(props_body(Some(&p)))
                } else {
                    None
                };
                let props_len = body.as_ref().map_or(0, |b| vbi_len(b.len()) + b.len());
                let len = 2 + props_len + filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
                header_with_len(out, 0x82, len);
                out.put_u16(*pid);
                if let Some(body) = &body {
                    put_props(out, body);
                }
                for (f, o) in filters {
                    put_str(out, f);
                    let mut b = o.qos;
                    if v5 {
                        b |= u8::from(o.no_local) << 2
                            | u8::from(o.retain_as_published) << 3
                            | o.retain_handling << 4;
                    }
                    out.put_u8(b);
                }
            }
            Packet::Suback { pid, codes } => {
                let props_len = usize::from(v5);
                header_with_len(out, 0x90, 2 + props_len + codes.len());
                out.put_u16(*pid);
                if v5 {
                    out.put_u8(0);
                }
                out.put_slice(codes);
            }
            Packet::Unsubscribe { pid, filters } => {
                let props_len = usize::from(v5);
                let len = 2 + props_len + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
                header_with_len(out, 0xa2, len);
                out.put_u16(*pid);
                if v5 {
                    out.put_u8(0);
                }
                for f in filters {
                    put_str(out, f);
                }
            }
            Packet::Unsuback { pid, codes } => {
                if v5 {
                    header_with_len(out, 0xb0, 3 + codes.len());
                    out.put_u16(*pid);
                    out.put_u8(0);
                    out.put_slice(codes);
                } else {
                    ack(out, 0xb0, *pid);
                }
            }
            Packet::Pingreq => out.put_slice(&[0xc0, 0]),
            Packet::Pingresp => out.put_slice(&[0xd0, 0]),
            Packet::Disconnect {
                reason,
                session_expiry,
                reason_string,
            } => {
                let mut body = BytesMut::new();
                if v5 {
                    props::put_u32(&mut body, props::SESSION_EXPIRY, *session_expiry);
                    props::put_string(&mut body, props::REASON_STRING, reason_string.as_deref());
                }
                if !v5 || (*reason == 0 && body.is_empty()) {
                    out.put_slice(&[0xe0, 0]);
                } else if body.is_empty() {
                    out.put_slice(&[0xe0, 1, *reason]);
                } else {
                    header_with_len(out, 0xe0, 1 + vbi_len(body.len()) + body.len());
                    out.put_u8(*reason);
                    put_props(out, &body);
                }
            }
            Packet::Auth { reason, props } => {
                let body = props_body(Some(props));
                if *reason == 0 && body.is_empty() {
                    out.put_slice(&[0xf0, 0]);
                } else {
                    header_with_len(out, 0xf0, 1 + vbi_len(body.len()) + body.len());
                    out.put_u8(*reason);
                    put_props(out, &body);
                }
            }
        }
    }

    /// This packet without reason string and user properties, which MQTT 5 lets a sender drop
    /// to stay within the receiver's Maximum Packet Size (PUBLISH is returned unchanged).
    pub fn without_diagnostics(&self) -> Packet {
        match self {
            Packet::Ack {
                kind, pid, reason, ..
            } => Packet::ack(*kind, *pid, *reason, None, vec![]),
            Packet::Disconnect {
                reason,
                session_expiry,
                ..
            } => Packet::Disconnect {
                reason: *reason,
                session_expiry: *session_expiry,
                reason_string: None,
            },
            Packet::Connack {
                session_present,
                code,
                props,
            } => Packet::Connack {
                session_present: *session_present,
                code: *code,
                props: props.as_ref().map(|p| {
                    Box::new(Properties {
                        reason_string: None,
                        user: vec![],
                        ..(**p).clone()
                    })
                }),
            },
            other => other.clone(),
        }
    }

    /// The 3.1.1 wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        self.to_bytes_as(Protocol::V311)
    }

    /// The wire form for `protocol` as a new buffer.
    pub fn to_bytes_as(&self, protocol: Protocol) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_as(protocol, &mut out);
        out.freeze()
    }
}

fn props_body(p: Option<&Properties>) -> BytesMut {
    let mut body = BytesMut::new();
    if let Some(p) = p {
        p.put(&mut body);
    }
    body
}

fn reason_props(reason_string: Option<&str>, user: &[(String, String)]) -> BytesMut {
    let mut body = BytesMut::new();
    props::put_string(&mut body, props::REASON_STRING, reason_string);
    props::put_user(&mut body, user);
    body
}

/// Property length, then the properties.
fn put_props(out: &mut BytesMut, body: &[u8]) {
    put_vbi(out, body.len() as u32);
    out.put_slice(body);
}

fn encode_publish(p: &Publish, v5: bool, out: &mut BytesMut) {
    let mut header = 0x30 | (p.qos << 1);
    if p.dup {
        header |= 0x08;
    }
    if p.retain {
        header |= 0x01;
    }
    let pid_len = if p.qos > 0 { 2 } else { 0 };
    let body = if v5 {
        let mut body = BytesMut::new();
        if let Some(m) = &p.props {
            props::put_message(&mut body, m);
        }
        if p.alias != 0 {
            props::put_u16(&mut body, props::TOPIC_ALIAS, Some(p.alias));
        }
        for id in &p.sub_ids {
            body.put_u8(props::SUBSCRIPTION_ID);
            put_vbi(&mut body, *id);
        }
        Some(body)
    } else {
        None
    };
    let props_len = body.as_ref().map_or(0, |b| vbi_len(b.len()) + b.len());
    header_with_len(
        out,
        header,
        2 + p.topic.len() + pid_len + props_len + p.payload.len(),
    );
    put_str(out, &p.topic);
    if p.qos > 0 {
        out.put_u16(p.pid);
    }
    if let Some(body) = &body {
        put_props(out, body);
    }
    out.put_slice(&p.payload);
}

fn encode_connect(c: &Connect, out: &mut BytesMut) {
    let (name, level) = match c.protocol {
        Protocol::V311 => ("MQTT", 4u8),
        Protocol::V31 => ("MQIsdp", 3u8),
        Protocol::V5 => ("MQTT", 5u8),
    };
    let v5 = c.protocol.is_v5();
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    let mut props = BytesMut::new();
    let mut will_props = BytesMut::new();
    if v5 {
        let p = Properties {
            session_expiry: (c.session_expiry != 0).then_some(c.session_expiry),
            receive_maximum: (c.receive_maximum != u16::MAX).then_some(c.receive_maximum),
            max_packet_size: (c.max_packet_size != u32::MAX).then_some(c.max_packet_size),
            topic_alias_max: (c.topic_alias_max != 0).then_some(c.topic_alias_max),
            request_response_info: c.request_response_info.then_some(1),
            request_problem_info: (!c.request_problem_info).then_some(0),
            user: c.user.clone(),
            auth_method: c.auth_method.clone(),
            ..Properties::default()
        };
        p.put(&mut props);
        if let Some(w) = &c.will {
            props::put_u32(
                &mut will_props,
                props::WILL_DELAY,
                (w.delay != 0).then_some(w.delay),
            );
            if let Some(m) = &w.props {
                props::put_message(&mut will_props, m);
            }
        }
    }
    let props_len = |b: &BytesMut| if v5 { vbi_len(b.len()) + b.len() } else { 0 };
    let mut len = 2 + name.len() + 4 + props_len(&props) + 2 + c.client_id.len();
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
        len += props_len(&will_props) + 4 + w.topic.len() + w.payload.len();
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
    if v5 {
        put_props(out, &props);
    }
    put_str(out, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            put_props(out, &will_props);
        }
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

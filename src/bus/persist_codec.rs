//! The binary form of the broker's durable records (see `persist`). Every record starts with a
//! version byte; a decoder refuses versions it does not know rather than guessing. Integers are
//! big-endian; strings and byte strings carry their length first.
//!
//! Message record (retained message or queued/sent message of a session), version 1:
//! `state u8` (0 queued, 1 sent and awaiting PUBACK/PUBREC, 2 released and awaiting PUBCOMP),
//! `pid u16`, `flags u8` (bits 0-1 QoS, bit 2 retain, bit 3 properties follow), `topic str16`,
//! `payload bytes32`, then the properties if flagged.
//!
//! Session record, version 1: `expiry u32` (session expiry interval, u32::MAX never),
//! `disconnected_at u64` (Unix seconds, 0 while connected), `next_pid u16`,
//! `incoming_qos2 u16 count + u16 each`, `subscriptions u32 count + (filter str16, options u8 as
//! in a v5 SUBSCRIBE, subscription id u32 with 0 for none) each`.

use bytes::Bytes;

use super::Message;

pub(crate) const VERSION: u8 = 1;

/// Where a persisted message stands with its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Queued,
    /// Sent with this packet id, not acknowledged yet.
    Sent(u16),
    /// QoS 2: PUBREC received, PUBREL sent with this packet id.
    Released(u16),
}

/// A persistent session's own record (its messages have records of their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    pub expiry: u32,
    pub disconnected_at: u64,
    pub next_pid: u16,
    pub incoming_qos2: Vec<u16>,
    /// (filter, options byte, subscription id or 0).
    pub subs: Vec<(String, u8, u32)>,
}

pub(crate) fn encode_message(msg: &Message, stage: Stage) -> Vec<u8> {
    encode_parts(&msg.topic, &msg.payload, msg.qos, msg.retain, stage)
}

pub(crate) fn encode_parts(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    stage: Stage,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + topic.len() + payload.len());
    out.push(VERSION);
    let (state, pid) = match stage {
        Stage::Queued => (0, 0),
        Stage::Sent(pid) => (1, pid),
        Stage::Released(pid) => (2, pid),
    };
    out.push(state);
    out.extend_from_slice(&pid.to_be_bytes());
    out.push((qos & 3) | if retain { 4 } else { 0 });
    put_str(&mut out, topic);
    put_bytes(&mut out, payload);
    out
}

pub(crate) fn decode_message(bytes: &[u8]) -> Result<(Message, Stage), String> {
    let mut r = Reader::new(bytes)?;
    let state = r.u8()?;
    let pid = r.u16()?;
    let flags = r.u8()?;
    let stage = match (state, pid) {
        (0, _) => Stage::Queued,
        (1, p) if p != 0 => Stage::Sent(p),
        (2, p) if p != 0 => Stage::Released(p),
        _ => return Err(format!("bad state {state} with packet id {pid}")),
    };
    let qos = flags & 3;
    if qos == 3 || flags & !7 != 0 {
        return Err(format!("bad flags {flags:#04x}"));
    }
    let topic = r.str()?;
    let payload = Bytes::from(r.bytes()?.to_vec());
    r.end()?;
    let msg = Message {
        topic,
        payload,
        qos,
        retain: flags & 4 != 0,
    };
    Ok((msg, stage))
}

pub(crate) fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + s.subs.iter().map(|f| f.0.len() + 7).sum::<usize>());
    out.push(VERSION);
    out.extend_from_slice(&s.expiry.to_be_bytes());
    out.extend_from_slice(&s.disconnected_at.to_be_bytes());
    out.extend_from_slice(&s.next_pid.to_be_bytes());
    out.extend_from_slice(&(s.incoming_qos2.len() as u16).to_be_bytes());
    for pid in &s.incoming_qos2 {
        out.extend_from_slice(&pid.to_be_bytes());
    }
    out.extend_from_slice(&(s.subs.len() as u32).to_be_bytes());
    for (filter, options, id) in &s.subs {
        put_str(&mut out, filter);
        out.push(*options);
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

pub(crate) fn decode_session(bytes: &[u8]) -> Result<SessionRecord, String> {
    let mut r = Reader::new(bytes)?;
    let expiry = r.u32()?;
    let disconnected_at = r.u64()?;
    let next_pid = r.u16()?;
    let n = r.u16()?;
    let incoming_qos2 = (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?;
    let n = r.u32()?;
    let mut subs = Vec::new();
    for _ in 0..n {
        let filter = r.str()?;
        let options = r.u8()?;
        if options & 3 == 3 {
            return Err(format!("bad QoS in options {options:#04x} of {filter:?}"));
        }
        subs.push((filter, options, r.u32()?));
    }
    r.end()?;
    Ok(SessionRecord {
        expiry,
        disconnected_at,
        next_pid,
        incoming_qos2,
        subs,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Topics, filters and MQTT strings are at most 65535 bytes by the protocol.
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, String> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Reader { rest }),
            Some((v, _)) => Err(format!("unknown record version {v}")),
            None => Err("empty record".into()),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.rest.len()
            ));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_be_bytes)
    }

    fn str(&mut self) -> Result<String, String> {
        let n = usize::from(self.u16()?);
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn end(&self) -> Result<(), String> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes left over")),
        }
    }
}

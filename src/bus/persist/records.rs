//! The binary form of the broker's durable records (see `persist`). Every record starts with a
//! version byte; a decoder refuses versions it does not know rather than guessing. Integers are
//! big-endian; strings and byte strings carry their length first.
//!
//! Message record (retained message or queued/sent message of a session), version 1:
//! `state u8` (0 queued, 1 sent and awaiting PUBACK/PUBREC, 2 released and awaiting PUBCOMP),
//! `pid u16`, `flags u8` (bits 0-1 QoS, bit 2 retain, bit 3 properties follow), `topic str16`,
//! `payload bytes32`, then the MQTT 5 properties if flagged: `mask u8` (bit 0 payload format,
//! 1 expiry, 2 content type, 3 response topic, 4 correlation data, 5 subscription identifiers
//! of the subscriptions a session's copy matched), the present ones of bits 0-4 in that
//! order (`u8`; `u32` seconds left at `u64` the Unix second it was written, whose sum is the
//! deadline, a wall-clock time that keeps counting while the gateway is down; `str16`; `str16`;
//! `bytes32`), then `u32` count of user properties and `(str16, str16)` each, then if bit 5 is
//! set `u32` count of subscription identifiers and `u32` each.
//!
//! Session record, version 1: `expiry u32` (session expiry interval, u32::MAX never),
//! `disconnected_at u64` (Unix seconds, 0 while connected), `next_pid u16`,
//! `subscriptions u32 count + (filter str16, options u8 as in a v5 SUBSCRIBE, subscription id
//! u32 with 0 for none) each`.
//!
//! Will record, version 1: `delay u32` (Will Delay Interval, seconds), then a message record.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::bus::{Message, MessageProps};

pub(crate) const VERSION: u8 = 1;

const FLAG_RETAIN: u8 = 4;
const FLAG_PROPS: u8 = 8;

/// A decoded message record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// With its expiry (if any) counted down to the time of decoding.
    pub msg: Message,
    pub stage: Stage,
    /// Its MQTT 5 expiry interval ran out while it was stored.
    pub expired: bool,
    /// When its expiry runs out, Unix seconds.
    pub deadline: Option<u64>,
}

impl Decoded {
    /// The message with its expiry clock running toward the stored deadline: a restart does
    /// not give it its interval again.
    pub fn counting_down(self) -> (Message, Stage) {
        let mut msg = self.msg;
        if let (Some(p), Some(deadline)) = (msg.props.as_mut(), self.deadline) {
            let at = UNIX_EPOCH + Duration::from_secs(deadline);
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Arc::make_mut(p).expires_at = Instant::now().checked_add(left);
        }
        (msg, self.stage)
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
    /// (filter, options byte, subscription id or 0).
    pub subs: Vec<(String, u8, u32)>,
}

pub(crate) fn encode_message(msg: &Message, stage: Stage) -> Vec<u8> {
    let props = msg.props.as_deref();
    encode_parts(&msg.topic, &msg.payload, msg.qos, msg.retain, props, stage)
}

pub(crate) fn encode_parts(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    props: Option<&MessageProps>,
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
    let mut flags = qos & 3;
    if retain {
        flags |= FLAG_RETAIN;
    }
    if props.is_some() {
        flags |= FLAG_PROPS;
    }
    out.push(flags);
    put_str(&mut out, topic);
    put_bytes(&mut out, payload);
    if let Some(p) = props {
        put_props(&mut out, p);
    }
    out
}

fn put_props(out: &mut Vec<u8>, p: &MessageProps) {
    let mask = u8::from(p.payload_format.is_some())
        | u8::from(p.expiry.is_some()) << 1
        | u8::from(p.content_type.is_some()) << 2
        | u8::from(p.response_topic.is_some()) << 3
        | u8::from(p.correlation_data.is_some()) << 4
        | u8::from(!p.sub_ids.is_empty()) << 5;
    out.push(mask);
    if let Some(f) = p.payload_format {
        out.push(f);
    }
    if let Some(e) = p.expiry {
        let (left, written) = stored_expiry(e, p.expires_at);
        out.extend_from_slice(&left.to_be_bytes());
        out.extend_from_slice(&written.to_be_bytes());
    }
    if let Some(t) = &p.content_type {
        put_str(out, t);
    }
    if let Some(t) = &p.response_topic {
        put_str(out, t);
    }
    if let Some(d) = &p.correlation_data {
        put_bytes(out, d);
    }
    out.extend_from_slice(&(p.user.len() as u32).to_be_bytes());
    for (k, v) in &p.user {
        put_str(out, k);
        put_str(out, v);
    }
    if !p.sub_ids.is_empty() {
        out.extend_from_slice(&(p.sub_ids.len() as u32).to_be_bytes());
        for id in &p.sub_ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
}

/// A message expiry as stored: seconds left at the Unix second written. One whose clock runs
/// (`expires_at`) has what is left of it, the deadline rounded down to its second (never later
/// than the publisher said); one whose clock has not started (a will waiting to be published)
/// has its whole `interval`.
fn stored_expiry(interval: u32, expires_at: Option<Instant>) -> (u32, u64) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let written = since_epoch.as_secs();
    let Some(at) = expires_at else {
        return (interval, written);
    };
    let left = at.saturating_duration_since(Instant::now())
        + Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
    (u32::try_from(left.as_secs()).unwrap_or(u32::MAX), written)
}

/// The properties, whether their expiry ran out by `now` (Unix seconds), and its deadline.
/// Without `now` the expiry is left as stored.
fn get_props(
    r: &mut Reader<'_>,
    now: Option<u64>,
) -> Result<(MessageProps, bool, Option<u64>), String> {
    let mask = r.u8()?;
    if mask & !0x3f != 0 {
        return Err(format!("bad property mask {mask:#04x}"));
    }
    let has = |bit: u8| mask & (1 << bit) != 0;
    let mut p = MessageProps::default();
    let mut expired = false;
    let mut deadline = None;
    if has(0) {
        p.payload_format = Some(r.u8()?);
    }
    if has(1) {
        let left = r.u32()?;
        let written = r.u64()?;
        p.expiry = Some(left);
        if let Some(now) = now {
            let at = written.saturating_add(u64::from(left));
            expired = now >= at;
            p.expiry = Some(u32::try_from(at.saturating_sub(now)).unwrap_or(u32::MAX));
            deadline = Some(at);
        }
    }
    if has(2) {
        p.content_type = Some(r.str()?);
    }
    if has(3) {
        p.response_topic = Some(r.str()?);
    }
    if has(4) {
        p.correlation_data = Some(Bytes::from(r.bytes()?.to_vec()));
    }
    let n = r.u32()?;
    for _ in 0..n {
        p.user.push((r.str()?, r.str()?));
    }
    if has(5) {
        let n = r.u32()?;
        for _ in 0..n {
            // Identifiers are 1 to 268,435,455 (MQTT 5 3.8.2.1.2).
            match r.u32()? {
                id @ 1..=0x0fff_ffff => p.sub_ids.push(id),
                id => return Err(format!("bad subscription identifier {id}")),
            }
        }
    }
    Ok((p, expired, deadline))
}

/// Decodes a message record; `now` (Unix seconds) counts its expiry down.
pub(crate) fn decode_message(bytes: &[u8], now: u64) -> Result<Decoded, String> {
    decode_message_at(bytes, Some(now))
}

fn decode_message_at(bytes: &[u8], now: Option<u64>) -> Result<Decoded, String> {
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
    if qos == 3 || flags & !(3 | FLAG_RETAIN | FLAG_PROPS) != 0 {
        return Err(format!("bad flags {flags:#04x}"));
    }
    let topic = r.str()?;
    let payload = Bytes::from(r.bytes()?.to_vec());
    let (props, expired, deadline) = match flags & FLAG_PROPS {
        0 => (None, false, None),
        _ => {
            let (p, expired, deadline) = get_props(&mut r, now)?;
            (Some(Arc::new(p)), expired, deadline)
        }
    };
    r.end()?;
    let msg = Message {
        topic,
        payload,
        qos,
        retain: flags & FLAG_RETAIN != 0,
        props,
        origin: None,
    };
    Ok(Decoded {
        msg,
        stage,
        expired,
        deadline,
    })
}

pub(crate) fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + s.subs.iter().map(|f| f.0.len() + 7).sum::<usize>());
    out.push(VERSION);
    out.extend_from_slice(&s.expiry.to_be_bytes());
    out.extend_from_slice(&s.disconnected_at.to_be_bytes());
    out.extend_from_slice(&s.next_pid.to_be_bytes());
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
        subs,
    })
}

/// A delayed will: `delay u32` (seconds), then its message as a message record, with its
/// whole expiry interval (it counts from publication).
pub(crate) fn encode_will(delay: u32, msg: &Message) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&delay.to_be_bytes());
    let mut msg = msg.clone();
    if let Some(p) = msg.props.as_mut().filter(|p| p.expires_at.is_some()) {
        Arc::make_mut(p).expires_at = None;
    }
    out.extend(encode_message(&msg, Stage::Queued));
    out
}

/// The delay and the message; its expiry is left whole (it counts from publication).
pub(crate) fn decode_will(bytes: &[u8]) -> Result<(u32, Message), String> {
    let mut r = Reader::new(bytes)?;
    let delay = r.u32()?;
    let d = decode_message_at(r.rest(), None)?;
    if d.stage != Stage::Queued {
        return Err("will recorded as sent".into());
    }
    Ok((delay, d.msg))
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

    fn rest(self) -> &'a [u8] {
        self.rest
    }

    fn end(&self) -> Result<(), String> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes left over")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiring(expires_at: Option<Instant>) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::from_static(b"x"),
            qos: 1,
            retain: false,
            props: Some(Arc::new(MessageProps {
                expiry: Some(60),
                expires_at,
                ..MessageProps::default()
            })),
            origin: None,
        }
    }

    #[test]
    fn a_running_expiry_is_stored_as_its_deadline_and_a_will_keeps_its_interval() {
        // Received 20 s ago with 60 s to live: a record written now (e.g. when it is sent)
        // keeps the deadline, it does not start the interval again.
        let m = expiring(Instant::now().checked_add(Duration::from_secs(40)));
        let d = decode_message(&encode_message(&m, Stage::Sent(1)), unix_now()).unwrap();
        let left = d.msg.props.as_ref().and_then(|p| p.expiry);
        assert!(matches!(left, Some(39..=40)), "{left:?}");
        // Restored, it counts down toward that deadline.
        let (restored, _) = d.counting_down();
        let at = restored.props.and_then(|p| p.expires_at).unwrap();
        let ahead = at.saturating_duration_since(Instant::now()).as_secs();
        assert!((38..=40).contains(&ahead), "{ahead} s ahead");
        // Long gone: expired at load.
        let past = expiring(Instant::now().checked_sub(Duration::from_secs(1)));
        let bytes = encode_message(&past, Stage::Queued);
        assert!(decode_message(&bytes, unix_now()).unwrap().expired);

        // A will's expiry counts from its publication: whole, and not running.
        let (_, will) = decode_will(&encode_will(5, &m)).unwrap();
        let props = will.props.unwrap();
        assert_eq!((props.expiry, props.expires_at), (Some(60), None));
    }
}

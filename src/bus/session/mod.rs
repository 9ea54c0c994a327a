//! One client connection's MQTT protocol state, without I/O: packets in, [`Action`]s out
//! (packets to send, router work, close). The I/O loop in `server.rs` carries the actions out in
//! order, so a PUBACK is written only after the message was handed to every subscriber.
//! MQTT 5 specifics (CONNACK properties, topic aliases, receive maximum, packet size limits,
//! reason codes) are in `session/v5.rs`.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::codec::reason::{connack, mqtt5};
use super::codec::{DecodeError, Packet, Protocol, Publish, SubOptions};
use super::{topic, Message};

mod v5;
pub use v5::Undelivered;
use v5::V5State;

/// Highest QoS this broker sends with; subscriptions are granted at most this.
pub const MAX_OUTBOUND_QOS: u8 = 2;
/// Default for unacknowledged outbound QoS 1/2 messages per connection.
pub const MAX_INFLIGHT: usize = 32;

/// The broker's side of what a connection may do (from `broker.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Outbound QoS 1/2 messages unacknowledged at once (at least 1).
    pub max_inflight: u16,
    /// MQTT 5: inbound QoS 1/2 messages a client may have unacknowledged (our Receive Maximum).
    pub receive_maximum: u16,
    /// MQTT 5: inbound topic aliases a client may set (our Topic Alias Maximum).
    pub topic_alias_max: u16,
    /// MQTT 5: the longest keepalive a client gets, in seconds; 0 for no limit.
    pub max_keepalive: u16,
    /// Largest packet accepted, announced to MQTT 5 clients as Maximum Packet Size.
    pub max_packet_size: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_inflight: MAX_INFLIGHT as u16,
            receive_maximum: 64,
            topic_alias_max: 16,
            max_keepalive: 0,
            max_packet_size: 256 << 10,
        }
    }
}

/// What the connection should do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Packet),
    /// Attach to the router session; answer with [`Session::accepted`] or [`Session::refused`].
    Connect {
        client_id: Option<String>,
        clean_session: bool,
        username: Option<String>,
        password: Option<bytes::Bytes>,
    },
    /// Publish into the router (retained store + fan-out).
    Route(Message),
    /// Add these (valid) subscriptions at the QoS the broker can grant, subject to the ACL,
    /// then send SUBACK `pid` with one return code per filter; queues matching retained messages
    /// as the options' retain handling says. `sub_id`: MQTT 5 subscription identifier.
    Subscribe {
        pid: u16,
        sub_id: Option<u32>,
        filters: Vec<(String, SubOptions)>,
    },
    /// Remove these subscriptions. Under MQTT 5 the UNSUBACK that follows gets 0x11 for each
    /// filter that had none.
    Unsubscribe(Vec<String>),
    /// End the connection. The will is still pending unless the client sent DISCONNECT.
    Close(String),
}

/// An outbound QoS 1/2 message the client has not completed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Sent; awaiting PUBACK (QoS 1) or PUBREC (QoS 2). Resent with DUP on reconnect.
    Publish(Message),
    /// QoS 2: PUBREC received and PUBREL sent; awaiting PUBCOMP. PUBREL is resent on reconnect.
    Released,
}

/// What a persistent session keeps between connections, besides its subscriptions and queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Outbound messages not yet completed, in the order they were first sent, with their ids.
    pub inflight: Vec<(u16, Pending)>,
    pub next_pid: u16,
    /// Incoming QoS 2 packet ids between PUBREC and PUBREL.
    pub incoming_qos2: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitConnect,
    Connecting,
    Connected,
    Closed,
}

#[derive(Debug)]
pub struct Session {
    phase: Phase,
    protocol: Protocol,
    keep_alive: u16,
    /// Boxed: most connections have none, and an idle connection should stay small.
    will: Option<Box<Message>>,
    inflight: VecDeque<(u16, Pending)>,
    limits: SessionLimits,
    next_pid: u16,
    incoming_qos2: HashSet<u16>,
    username: Option<String>,
    /// Ended by DISCONNECT or a refusal rather than a protocol violation.
    orderly: bool,
    /// MQTT 5 connection state, allocated by a v5 CONNECT.
    v5: Option<Box<V5State>>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

/// Why CONNECT's client id is refused (CONNACK 0x02), if it is: 3.1 ids are 1 to 23
/// characters; 3.1.1 assigns one only under clean session; MQTT 5 assigns one even to a client
/// that wants its session kept.
fn refused_client_id(c: &super::codec::Connect) -> Option<&'static str> {
    match c.protocol {
        Protocol::V31 if c.client_id.is_empty() => Some("empty MQTT 3.1 client id"),
        Protocol::V31 if c.client_id.chars().count() > 23 => {
            Some("MQTT 3.1 client id longer than 23 characters")
        }
        Protocol::V311 if c.client_id.is_empty() && !c.clean_session => {
            Some("empty client id without clean session")
        }
        _ => None,
    }
}

fn close(reason: impl Into<String>) -> Vec<Action> {
    vec![Action::Close(reason.into())]
}

impl Session {
    pub fn new() -> Session {
        Session::with_max_inflight(MAX_INFLIGHT)
    }

    /// A session that keeps at most `max_inflight` (at least 1) outbound QoS 1/2 messages
    /// unacknowledged.
    pub fn with_max_inflight(max_inflight: usize) -> Session {
        Session::with_limits(SessionLimits {
            max_inflight: u16::try_from(max_inflight).unwrap_or(u16::MAX),
            ..SessionLimits::default()
        })
    }

    pub fn with_limits(limits: SessionLimits) -> Session {
        Session {
            phase: Phase::AwaitConnect,
            protocol: Protocol::V311,
            keep_alive: 0,
            will: None,
            inflight: VecDeque::new(),
            limits: SessionLimits {
                max_inflight: limits.max_inflight.max(1),
                receive_maximum: limits.receive_maximum.max(1),
                ..limits
            },
            next_pid: 1,
            incoming_qos2: HashSet::new(),
            username: None,
            orderly: false,
            v5: None,
        }
    }

    /// Whether a close now is the protocol's normal end (DISCONNECT, a refused CONNECT) rather
    /// than a violation by the client.
    pub fn orderly(&self) -> bool {
        self.orderly
    }

    /// The protocol the client's CONNECT spoke (3.1.1 until then): how packets are framed.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The user name the client connected with.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Records the client id the router attached this connection to, where the session needs
    /// it: an MQTT 5 CONNACK names an id the broker assigned. (The connection keeps the id.)
    pub fn set_client_id(&mut self, id: &str) {
        if let Some(v5) = self.v5.as_mut().filter(|v5| v5.assigned_id) {
            v5.assigned = Some(id.to_owned());
        }
    }

    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// How long the connection may stay silent before it is closed: 1.5x the keepalive, or
    /// `None` when keepalive is 0 (or before CONNECT was accepted).
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.is_connected() && self.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    /// Handles one decoded packet from the client.
    pub fn handle(&mut self, packet: Packet) -> Vec<Action> {
        let actions = match self.phase {
            Phase::AwaitConnect => match packet {
                Packet::Connect(c) => {
                    self.protocol = c.protocol;
                    if let Some(why) = refused_client_id(&c) {
                        self.phase = Phase::Closed;
                        self.orderly = true;
                        return vec![
                            Action::Send(Packet::Connack {
                                session_present: false,
                                code: connack::IDENTIFIER_REJECTED,
                                props: None,
                            }),
                            Action::Close(why.into()),
                        ];
                    }
                    self.phase = Phase::Connecting;
                    self.keep_alive = c.keep_alive;
                    if c.protocol.is_v5() {
                        if let Some(refusal) = self.connect_v5(&c) {
                            return refusal;
                        }
                    }
                    self.will = c.will.map(|w| {
                        Box::new(Message {
                            topic: w.topic,
                            payload: w.payload,
                            qos: w.qos,
                            retain: w.retain,
                            props: w.props,
                            origin: None,
                        })
                    });
                    self.username = c.username.clone();
                    return vec![Action::Connect {
                        client_id: (!c.client_id.is_empty()).then_some(c.client_id),
                        clean_session: c.clean_session,
                        username: c.username,
                        password: c.password,
                    }];
                }
                _ => close("first packet is not CONNECT"),
            },
            Phase::Connecting | Phase::Closed => close("packet while not connected"),
            Phase::Connected => self.handle_connected(packet),
        };
        if matches!(actions.last(), Some(Action::Close(_))) {
            self.phase = Phase::Closed;
        }
        actions
    }

    fn handle_connected(&mut self, packet: Packet) -> Vec<Action> {
        match packet {
            Packet::Connect(_) => self.disconnect(mqtt5::PROTOCOL_ERROR, "second CONNECT"),
            Packet::Publish(p) => self.publish_in(p),
            Packet::Ack {
                kind, pid, reason, ..
            } => self.ack_v5(kind, pid, reason),
            Packet::Puback(pid) => {
                let acked = |(p, e): &(u16, Pending)| {
                    *p == pid && matches!(e, Pending::Publish(m) if m.qos == 1)
                };
                if let Some(i) = self.inflight.iter().position(acked) {
                    self.inflight.remove(i);
                }
                vec![]
            }
            Packet::Pubrec(pid) if self.qos1_in_flight(pid) => {
                self.disconnect(mqtt5::PROTOCOL_ERROR, "PUBREC for a QoS 1 message")
            }
            Packet::Pubrec(pid) => {
                let received = |(p, e): &(u16, Pending)| {
                    *p == pid && matches!(e, Pending::Publish(m) if m.qos == 2)
                };
                if let Some(i) = self.inflight.iter().position(received) {
                    self.inflight[i].1 = Pending::Released;
                }
                // Also for an id we no longer hold: the client then completes its side.
                vec![Action::Send(Packet::Pubrel(pid))]
            }
            Packet::Pubcomp(pid) => {
                let completed = |(p, e): &(u16, Pending)| *p == pid && *e == Pending::Released;
                if let Some(i) = self.inflight.iter().position(completed) {
                    self.inflight.remove(i);
                }
                vec![]
            }
            Packet::Pubrel(pid) => {
                self.incoming_qos2.remove(&pid);
                vec![Action::Send(Packet::Pubcomp(pid))]
            }
            Packet::Subscribe {
                pid,
                sub_id,
                filters,
                ..
            } => {
                // A malformed filter is a protocol violation (MQTT-4.7.1, 4.8): close.
                if let Some((bad, _)) = filters.iter().find(|(f, _)| !topic::valid_topic_filter(f))
                {
                    return self.disconnect(
                        mqtt5::TOPIC_FILTER_INVALID,
                        &format!("invalid topic filter {bad:?} in SUBSCRIBE"),
                    );
                }
                let shared = |f: &str| f.starts_with(topic::SHARE_PREFIX);
                if let Some((f, _)) = filters.iter().find(|(f, o)| o.no_local && shared(f)) {
                    return self.disconnect(
                        mqtt5::PROTOCOL_ERROR,
                        &format!("No Local on shared subscription {f:?}"),
                    );
                }
                let granted = filters
                    .into_iter()
                    .map(|(f, o)| {
                        let qos = o.qos.min(MAX_OUTBOUND_QOS);
                        (f, SubOptions { qos, ..o })
                    })
                    .collect();
                // The router answers with the SUBACK once it has applied the ACL.
                vec![Action::Subscribe {
                    pid,
                    sub_id,
                    filters: granted,
                }]
            }
            Packet::Unsubscribe { pid, filters } => {
                if let Some(bad) = filters.iter().find(|f| !topic::valid_topic_filter(f)) {
                    return self.disconnect(
                        mqtt5::TOPIC_FILTER_INVALID,
                        &format!("invalid topic filter {bad:?} in UNSUBSCRIBE"),
                    );
                }
                let codes = if self.protocol.is_v5() {
                    vec![0; filters.len()]
                } else {
                    Vec::new()
                };
                vec![
                    Action::Unsubscribe(filters),
                    Action::Send(Packet::Unsuback { pid, codes }),
                ]
            }
            Packet::Pingreq => vec![Action::Send(Packet::Pingresp)],
            Packet::Disconnect {
                reason,
                session_expiry,
                ..
            } => self.client_disconnect(reason, session_expiry),
            Packet::Connack { .. }
            | Packet::Suback { .. }
            | Packet::Unsuback { .. }
            | Packet::Pingresp => {
                self.disconnect(mqtt5::PROTOCOL_ERROR, "server-only packet from client")
            }
            // No authentication method was accepted at CONNECT, so AUTH is a protocol error.
            Packet::Auth { .. } => self.disconnect(
                mqtt5::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            ),
        }
    }

    /// Whether `pid` is an outbound QoS 1 message awaiting its PUBACK: then no PUBREC may name it.
    fn qos1_in_flight(&self, pid: u16) -> bool {
        let qos1 =
            |(p, e): &(u16, Pending)| *p == pid && matches!(e, Pending::Publish(m) if m.qos == 1);
        self.inflight.iter().any(qos1)
    }

    fn publish_in(&mut self, mut p: Publish) -> Vec<Action> {
        let pid = p.pid;
        let qos = p.qos;
        if self.v5.is_some() {
            if let Err(refusal) = self.publish_in_v5(&mut p) {
                return refusal;
            }
        }
        let route = Action::Route(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            props: p.props,
            origin: None,
        });
        match qos {
            0 => vec![route],
            1 => vec![route, Action::Send(Packet::Puback(pid))],
            _ => {
                if self.incoming_qos2.insert(pid) {
                    vec![route, Action::Send(Packet::Pubrec(pid))]
                } else {
                    // A resend before PUBREL: acknowledge again, do not deliver twice.
                    vec![Action::Send(Packet::Pubrec(pid))]
                }
            }
        }
    }

    /// A frame could not be decoded: close, after CONNACK 0x01 for an unsupported protocol level
    /// or (MQTT 5, once connected) a DISCONNECT with the error's reason code.
    pub fn invalid(&mut self, err: &DecodeError) -> Vec<Action> {
        if self.is_connected() && self.v5.is_some() {
            return self.disconnect(err.reason_code(), &err.to_string());
        }
        let mut out = Vec::new();
        if self.phase == Phase::AwaitConnect {
            if let DecodeError::UnsupportedProtocolLevel(_) = err {
                out.push(Action::Send(Packet::Connack {
                    session_present: false,
                    code: connack::UNACCEPTABLE_PROTOCOL_VERSION,
                    props: None,
                }));
            }
        }
        self.phase = Phase::Closed;
        out.push(Action::Close(err.to_string()));
        out
    }

    /// The router attached this connection: CONNACK, then resend what the session left unacknowledged.
    pub fn accepted(&mut self, session_present: bool, restored: SessionState) -> Vec<Action> {
        self.phase = Phase::Connected;
        let mut out = vec![Action::Send(Packet::Connack {
            session_present,
            code: 0,
            props: self.connack_props(),
        })];
        if restored.next_pid != 0 {
            self.next_pid = restored.next_pid;
        }
        self.incoming_qos2 = restored.incoming_qos2.into_iter().collect();
        // MQTT-4.4.0-1 / 4.6.0-1: resend unacknowledged PUBLISH (DUP) and PUBREL, in order.
        for (pid, pending) in restored.inflight {
            out.push(Action::Send(match &pending {
                Pending::Publish(msg) => Packet::Publish(Publish {
                    dup: true,
                    props: msg.props.clone(),
                    sub_ids: msg
                        .props
                        .as_ref()
                        .map(|p| p.sub_ids.clone())
                        .unwrap_or_default(),
                    ..Publish::new(
                        msg.topic.clone(),
                        msg.payload.clone(),
                        msg.qos,
                        msg.retain,
                        pid,
                    )
                }),
                Pending::Released => Packet::Pubrel(pid),
            }));
            self.inflight.push_back((pid, pending));
        }
        out
    }

    /// The router refused the connection with this CONNACK return code.
    pub fn refused(&mut self, code: u8) -> Vec<Action> {
        self.phase = Phase::Closed;
        self.orderly = true;
        self.will = None;
        // MQTT 5 has its own codes for the 3.1.1 refusals the router and auth give.
        let (code, why) = match (self.protocol.is_v5(), code) {
            (true, connack::IDENTIFIER_REJECTED) => {
                (mqtt5::CLIENT_ID_NOT_VALID, "client identifier not valid")
            }
            (true, connack::SERVER_UNAVAILABLE) => {
                (mqtt5::QUOTA_EXCEEDED, "connection limit reached")
            }
            (true, connack::BAD_USER_NAME_OR_PASSWORD) => (
                mqtt5::BAD_USER_NAME_OR_PASSWORD,
                "bad user name or password",
            ),
            (true, connack::NOT_AUTHORIZED) => (mqtt5::NOT_AUTHORIZED, "not authorized"),
            _ => (code, ""),
        };
        self.refuse(code, why)
    }

    /// Whether another outbound message may be taken from the queue now: within our in-flight
    /// window and the MQTT 5 client's Receive Maximum.
    pub fn can_send(&self) -> bool {
        let window = match &self.v5 {
            Some(v5) => self.limits.max_inflight.min(v5.receive_max),
            None => self.limits.max_inflight,
        };
        self.is_connected() && self.inflight.len() < usize::from(window)
    }

    /// The PUBLISH that carries a queued message to this client (QoS already downgraded), or
    /// why it is not sent: its MQTT 5 message expiry passed, or it would exceed the client's
    /// Maximum Packet Size (then it counts as delivered, MQTT 5 3.1.2.25).
    pub fn deliver(&mut self, msg: Message) -> Result<Packet, Undelivered> {
        let qos = msg.qos.min(MAX_OUTBOUND_QOS);
        // The clock is read only for a message with an expiry deadline.
        let deadline = msg.props.as_ref().and_then(|p| p.expires_at);
        let now = deadline.map(|_| std::time::Instant::now());
        if let (Some(at), Some(now)) = (deadline, now) {
            if at <= now {
                return Err(Undelivered::Expired);
            }
        }
        if self.v5.is_none() {
            let pid = if qos > 0 { self.alloc_pid() } else { 0 };
            let packet = Packet::Publish(Publish::new(
                msg.topic.clone(),
                msg.payload.clone(),
                qos,
                msg.retain,
                pid,
            ));
            if qos > 0 {
                self.inflight
                    .push_back((pid, Pending::Publish(Message { qos, ..msg })));
            }
            return Ok(packet);
        }
        self.deliver_v5(msg, qos, now)
    }

    fn alloc_pid(&mut self) -> u16 {
        loop {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|(p, _)| *p == pid) {
                return pid;
            }
        }
    }

    /// The will, unless DISCONNECT discarded it (or it was already taken); its message expiry
    /// starts now.
    pub fn take_will(&mut self) -> Option<Message> {
        let mut will = *self.will.take()?;
        super::MessageProps::start_expiry(&mut will.props, std::time::Instant::now());
        Some(will)
    }

    /// What a persistent session keeps for the next connection.
    pub fn take_state(&mut self) -> SessionState {
        SessionState {
            inflight: self.inflight.drain(..).collect(),
            next_pid: self.next_pid,
            incoming_qos2: self.incoming_qos2.drain().collect(),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lifetime_tests;

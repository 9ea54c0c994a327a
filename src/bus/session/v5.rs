//! MQTT 5 per-connection rules: CONNACK properties and refusals with reason codes, server
//! DISCONNECT with a reason, the client's DISCONNECT reasons, topic aliases both ways, receive
//! maximum both ways, the client's Maximum Packet Size and message expiry on delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{close, Action, Pending, Phase, Session};
use crate::bus::codec::reason::mqtt5;
use crate::bus::codec::{AckKind, Connect, Packet, Properties, Protocol, Publish};
use crate::bus::{Message, MessageProps};

/// What only an MQTT 5 connection needs; boxed so that 3.1.1 connections do not carry it.
#[derive(Debug)]
pub(super) struct V5State {
    /// The client's Receive Maximum: our outbound window toward it.
    pub receive_max: u16,
    /// The client's Maximum Packet Size.
    max_packet: u32,
    /// The client's Topic Alias Maximum: how many aliases we may assign toward it.
    alias_max: u16,
    problem_info: bool,
    /// The client sent an empty client id; CONNACK tells it the one assigned.
    pub assigned_id: bool,
    /// The id the broker assigned (then named in CONNACK).
    pub assigned: Option<String>,
    client_keep_alive: u16,
    session_expiry: u32,
    will_delay: u32,
    disconnect_expiry: Option<u32>,
    /// Inbound QoS 1 PUBLISHes whose PUBACK is not written yet (QoS 2 ones are `incoming_qos2`).
    qos1_unacked: u16,
    /// Allocated by the first topic alias either way, so idle connections stay small.
    aliases: Option<Box<Aliases>>,
}

#[derive(Debug, Default)]
struct Aliases {
    inbound: HashMap<u16, String>,
    outbound: HashMap<String, u16>,
}

/// Why [`Session::deliver`] sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// The message expiry interval passed while it was queued or retained.
    Expired,
    /// Larger than the client's Maximum Packet Size: dropped (and counted).
    TooLarge,
}

impl Session {
    /// Records an MQTT 5 CONNECT; `Some(actions)` refuses it.
    pub(super) fn connect_v5(&mut self, c: &Connect) -> Option<Vec<Action>> {
        let max_keepalive = self.limits.max_keepalive;
        if max_keepalive != 0 && (c.keep_alive == 0 || c.keep_alive > max_keepalive) {
            // Announced as Server Keep Alive; supervision uses it.
            self.keep_alive = max_keepalive;
        }
        self.v5 = Some(Box::new(V5State {
            receive_max: c.receive_maximum,
            max_packet: c.max_packet_size,
            alias_max: c.topic_alias_max,
            problem_info: c.request_problem_info,
            assigned_id: c.client_id.is_empty(),
            assigned: None,
            client_keep_alive: c.keep_alive,
            session_expiry: c.session_expiry,
            will_delay: c.will.as_ref().map_or(0, |w| w.delay),
            disconnect_expiry: None,
            qos1_unacked: 0,
            aliases: None,
        }));
        if let Some(method) = &c.auth_method {
            let why = format!("authentication method {method:?} not supported");
            return Some(self.refuse(mqtt5::BAD_AUTHENTICATION_METHOD, &why));
        }
        None
    }

    /// The session expiry interval the client asked for: at CONNECT, or as changed by its
    /// DISCONNECT (MQTT 5; 3.1.1 gives `None`).
    pub fn session_expiry(&self) -> Option<u32> {
        let v5 = self.v5.as_ref()?;
        Some(v5.disconnect_expiry.unwrap_or(v5.session_expiry))
    }

    /// The will delay interval in seconds (MQTT 5; 0 otherwise).
    pub fn will_delay(&self) -> u32 {
        self.v5.as_ref().map_or(0, |v5| v5.will_delay)
    }

    /// The largest packet the client accepts (MQTT 5 Maximum Packet Size).
    pub fn client_max_packet(&self) -> usize {
        self.v5
            .as_ref()
            .map_or(usize::MAX, |v5| v5.max_packet as usize)
    }

    /// Whether reason strings go to this client (MQTT 5, unless it asked for none).
    pub fn wants_problem_info(&self) -> bool {
        self.v5.as_ref().is_some_and(|v5| v5.problem_info)
    }

    /// An incoming QoS 2 message was refused with a failure PUBREC, or its PUBREC was never sent
    /// (the outbox lost it): its exchange is over, and a resend of `pid` is a new delivery.
    pub fn forget_incoming(&mut self, pid: u16) {
        self.incoming_qos2.remove(&pid);
    }

    /// Whether incoming QoS 2 `pid` is received and not released yet.
    pub fn holds_incoming(&self, pid: u16) -> bool {
        self.incoming_qos2.contains(&pid)
    }

    /// A refusing CONNACK, with a reason string for an MQTT 5 client that wants one.
    pub(super) fn refuse(&mut self, code: u8, why: &str) -> Vec<Action> {
        self.phase = Phase::Closed;
        self.orderly = true;
        self.will = None;
        let props = (self.wants_problem_info() && !why.is_empty()).then(|| {
            Box::new(Properties {
                reason_string: Some(why.to_owned()),
                ..Properties::default()
            })
        });
        vec![
            Action::Send(Packet::Connack {
                session_present: false,
                code,
                props,
            }),
            Action::Close(format!("refused with return code {code}")),
        ]
    }

    /// A CONNECT that says MQTT 5 but could not be decoded: CONNACK with the error's reason code
    /// (0x81 malformed, 0x82 protocol error) and why, then close (MQTT 5 4.13.1). The reason
    /// string is left out where it would exceed the Maximum Packet Size the CONNECT asked for.
    pub fn invalid_connect_v5(
        &mut self,
        err: &crate::bus::codec::DecodeError,
        max_packet: Option<u32>,
    ) -> Vec<Action> {
        if self.phase != Phase::AwaitConnect {
            return self.invalid(err);
        }
        self.protocol = Protocol::V5;
        self.phase = Phase::Closed;
        let props = Box::new(Properties {
            reason_string: Some(err.to_string()),
            ..Properties::default()
        });
        let mut connack = Packet::Connack {
            session_present: false,
            code: err.reason_code(),
            props: Some(props),
        };
        let too_large = |m: u32| connack.to_bytes_as(Protocol::V5).len() > m as usize;
        if max_packet.is_some_and(too_large) {
            connack = connack.without_diagnostics();
        }
        vec![Action::Send(connack), Action::Close(err.to_string())]
    }

    /// CONNACK properties for an accepted MQTT 5 client.
    pub(super) fn connack_props(&self) -> Option<Box<Properties>> {
        let v5 = self.v5.as_ref()?;
        let l = &self.limits;
        let p = Properties {
            assigned_client_id: v5.assigned.clone(),
            receive_maximum: (l.receive_maximum != u16::MAX).then_some(l.receive_maximum),
            max_packet_size: Some(l.max_packet_size),
            topic_alias_max: (l.topic_alias_max != 0).then_some(l.topic_alias_max),
            server_keep_alive: (self.keep_alive != v5.client_keep_alive).then_some(self.keep_alive),
            ..Properties::default()
        };
        Some(Box::new(p))
    }

    /// The DISCONNECT that tells an accepted MQTT 5 client why the server closes the
    /// connection; `None` for 3.1.1 (which has no server DISCONNECT) or before CONNACK.
    pub fn disconnect_packet(&self, code: u8, why: &str) -> Option<Packet> {
        let v5 = self.v5.as_ref()?;
        (self.phase == Phase::Connected).then(|| Packet::Disconnect {
            reason: code,
            session_expiry: None,
            reason_string: v5.problem_info.then(|| why.to_owned()),
        })
    }

    /// Closes the connection for `why`, after a DISCONNECT with `code` to an MQTT 5 client.
    pub(super) fn disconnect(&mut self, code: u8, why: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(p) = self.disconnect_packet(code, why) {
            out.push(Action::Send(p));
        }
        out.push(Action::Close(why.to_owned()));
        self.phase = Phase::Closed;
        out
    }

    /// The client's DISCONNECT: the will is dropped when the reason is 0x00 (3.1.1 always).
    pub(super) fn client_disconnect(
        &mut self,
        reason: u8,
        session_expiry: Option<u32>,
    ) -> Vec<Action> {
        if let (Some(v5), Some(expiry)) = (self.v5.as_mut(), session_expiry) {
            // MQTT 5 3.14.2.2.2: 0 at CONNECT cannot become non-zero now.
            if v5.session_expiry == 0 && expiry != 0 {
                return self.disconnect(
                    mqtt5::PROTOCOL_ERROR,
                    "session expiry set by DISCONNECT after 0 at CONNECT",
                );
            }
            v5.disconnect_expiry = Some(expiry);
        }
        // Only a normal disconnection (0x00) discards the will (MQTT 5 3.14.4); 0x04 asks for it
        // and so does any error reason.
        if reason == mqtt5::SUCCESS {
            self.will = None;
        }
        self.orderly = true;
        close("client sent DISCONNECT")
    }

    /// An MQTT 5 acknowledgement with a reason code or properties from the client.
    pub(super) fn ack_v5(&mut self, kind: AckKind, pid: u16, reason: u8) -> Vec<Action> {
        match kind {
            AckKind::Puback => self.handle_connected(Packet::Puback(pid)),
            // A PUBREC failure code ends the exchange (MQTT 5 4.3.3): no PUBREL. (One for a QoS 1
            // message is a protocol error, whatever its code.)
            AckKind::Pubrec if reason >= mqtt5::UNSPECIFIED_ERROR && !self.qos1_in_flight(pid) => {
                let received = |(p, e): &(u16, Pending)| {
                    *p == pid && matches!(e, Pending::Publish(m) if m.qos == 2)
                };
                if let Some(i) = self.inflight.iter().position(received) {
                    self.inflight.remove(i);
                }
                vec![]
            }
            AckKind::Pubrec => self.handle_connected(Packet::Pubrec(pid)),
            AckKind::Pubrel => self.handle_connected(Packet::Pubrel(pid)),
            AckKind::Pubcomp => self.handle_connected(Packet::Pubcomp(pid)),
        }
    }

    /// MQTT 5 rules for an incoming PUBLISH: no subscription ids, topic aliases within our
    /// maximum, the client within our Receive Maximum; starts the message expiry clock.
    pub(super) fn publish_in_v5(&mut self, p: &mut Publish) -> Result<(), Vec<Action>> {
        let max_alias = self.limits.topic_alias_max;
        let receive_max = usize::from(self.limits.receive_maximum);
        let qos2_open = self.incoming_qos2.len();
        let counts = p.qos == 1 || (p.qos == 2 && !self.incoming_qos2.contains(&p.pid));
        let Some(v5) = self.v5.as_mut() else {
            return Ok(());
        };
        let refusal = if !p.sub_ids.is_empty() {
            Some((
                mqtt5::PROTOCOL_ERROR,
                "subscription identifier in a PUBLISH from a client".into(),
            ))
        } else if p.alias > max_alias {
            Some((
                mqtt5::TOPIC_ALIAS_INVALID,
                format!("topic alias {} beyond the maximum of {max_alias}", p.alias),
            ))
        } else if p.alias != 0 && p.topic.is_empty() {
            match v5.aliases.as_ref().and_then(|a| a.inbound.get(&p.alias)) {
                Some(topic) => {
                    p.topic = topic.clone();
                    None
                }
                None => Some((
                    mqtt5::PROTOCOL_ERROR,
                    format!("topic alias {} was never set", p.alias),
                )),
            }
        } else {
            if p.alias != 0 {
                let aliases = v5.aliases.get_or_insert_with(Box::default);
                aliases.inbound.insert(p.alias, p.topic.clone());
            }
            None
        };
        let refusal = refusal.or_else(|| {
            (counts && qos2_open + usize::from(v5.qos1_unacked) >= receive_max).then(|| {
                (
                    mqtt5::RECEIVE_MAXIMUM_EXCEEDED,
                    "receive maximum exceeded".to_string(),
                )
            })
        });
        if let Some((code, why)) = refusal {
            return Err(self.disconnect(code, &why));
        }
        if counts && p.qos == 1 {
            v5.qos1_unacked += 1;
        }
        MessageProps::start_expiry(&mut p.props, Instant::now());
        Ok(())
    }

    /// `n` PUBACKs were written to the client: those QoS 1 messages no longer count toward
    /// our Receive Maximum.
    pub fn pubacks_written(&mut self, n: usize) {
        if let Some(v5) = self.v5.as_mut() {
            let n = u16::try_from(n).unwrap_or(u16::MAX);
            v5.qos1_unacked = v5.qos1_unacked.saturating_sub(n);
        }
    }

    /// The PUBLISH for an MQTT 5 client: remaining expiry, subscription ids, a topic alias
    /// when the client allows them, and its Maximum Packet Size.
    pub(super) fn deliver_v5(
        &mut self,
        msg: Message,
        qos: u8,
        now: Option<Instant>,
    ) -> Result<Packet, Undelivered> {
        let mut props = msg.props.clone();
        if let (Some(p), Some(now)) = (props.as_mut(), now) {
            if let Some(left) = p.expiry_left(now) {
                if p.expiry != Some(left) {
                    Arc::make_mut(p).expiry = Some(left);
                }
            }
        }
        let Some(v5) = self.v5.as_ref() else {
            return Err(Undelivered::TooLarge);
        };
        let assigned = v5.aliases.as_ref().map_or(0, |a| a.outbound.len());
        let known = v5.aliases.as_ref().and_then(|a| a.outbound.get(&msg.topic));
        let (topic, alias, new_alias) = match known {
            Some(&a) => (String::new(), a, false),
            None if assigned < usize::from(v5.alias_max) => {
                (msg.topic.clone(), assigned as u16 + 1, true)
            }
            None => (msg.topic.clone(), 0, false),
        };
        let max_packet = v5.max_packet;
        // Measured with a stand-in packet id (same size): a dropped message takes none.
        let mut publish = Publish {
            alias,
            sub_ids: props
                .as_ref()
                .map(|p| p.sub_ids.clone())
                .unwrap_or_default(),
            props,
            ..Publish::new(topic, msg.payload.clone(), qos, msg.retain, 1)
        };
        if max_packet != u32::MAX {
            let size = Packet::Publish(publish.clone())
                .to_bytes_as(Protocol::V5)
                .len();
            if size > max_packet as usize {
                return Err(Undelivered::TooLarge);
            }
        }
        let pid = if qos > 0 { self.alloc_pid() } else { 0 };
        publish.pid = pid;
        let packet = Packet::Publish(publish);
        if let (true, Some(v5)) = (new_alias, self.v5.as_mut()) {
            let aliases = v5.aliases.get_or_insert_with(Box::default);
            aliases.outbound.insert(msg.topic.clone(), alias);
        }
        if qos > 0 {
            self.inflight
                .push_back((pid, Pending::Publish(Message { qos, ..msg })));
        }
        Ok(packet)
    }
}

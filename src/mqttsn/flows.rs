//! What an active client does: REGISTER/REGACK both ways, PUBLISH at every QoS both ways,
//! SUBSCRIBE/UNSUBSCRIBE, will updates; and the delivery pump that REGISTERs a topic before its
//! first PUBLISH to the client and keeps one exchange in flight.

use std::time::Instant;

use bytes::Bytes;

use super::codec::{Packet, Publish, Qos, ReturnCode, SubTopic, TopicRef};
use super::qos::{Queued, Wait};
use super::session::{grace, Action, Engine, State};
use super::topics::{self, short_name, Route};
use crate::bus::{topic, Message};

fn raw_id(t: &TopicRef) -> u16 {
    match t {
        TopicRef::Id(i) | TopicRef::Predefined(i) => *i,
        TopicRef::Short(s) => u16::from_be_bytes(*s),
    }
}

impl Engine {
    pub(super) fn on_active(
        &mut self,
        id: &str,
        packet: Packet,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let max_topics = self.limits.max_topics;
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        match packet {
            Packet::Register { msg_id, topic, .. } => {
                let rc = if !topic::valid_topic_name(&topic) {
                    Err(ReturnCode::NotSupported)
                } else {
                    c.topics
                        .assign(&topic, true, max_topics)
                        .map_err(|_| ReturnCode::Congestion)
                };
                let (topic_id, rc) = match rc {
                    Ok(t) => (t, ReturnCode::Accepted),
                    Err(rc) => (0, rc),
                };
                c.send(
                    out,
                    Packet::RegAck {
                        topic_id,
                        msg_id,
                        rc,
                    },
                );
                out.push(Action::Save(id.to_owned()));
            }
            Packet::RegAck {
                topic_id,
                msg_id,
                rc,
            } => {
                if let Some(Wait::RegAck {
                    topic_id: t,
                    msg_id: m,
                }) = c.out.inflight.as_ref().map(|f| f.wait.clone())
                {
                    if m == msg_id {
                        c.out.inflight = None;
                        if rc == ReturnCode::Accepted && topic_id == t {
                            c.topics.acknowledge(t);
                            out.push(Action::Save(id.to_owned()));
                        } else {
                            // Refused: the message that needed the topic cannot be sent.
                            c.topics.remove(t);
                            c.out.queue.pop_front();
                            self.counters.buffer_dropped += 1;
                        }
                        self.pump(id, now, out);
                    }
                }
            }
            Packet::PubAck {
                topic_id,
                msg_id,
                rc,
            } => {
                if matches!(&c.out.inflight, Some(f) if matches!(&f.wait, Wait::PubAck(p) if p.msg_id == msg_id))
                {
                    c.out.inflight = None;
                    if rc == ReturnCode::InvalidTopicId {
                        // The client forgot the id: register again before the next publish.
                        c.topics.remove(topic_id);
                    }
                    self.pump(id, now, out);
                }
            }
            Packet::PubRec(msg_id) => {
                let waiting = c.out.inflight.as_ref().map(|f| f.wait.clone());
                match waiting {
                    Some(Wait::PubRec(p)) if p.msg_id == msg_id => {
                        c.out
                            .start(Wait::PubComp(msg_id), Packet::PubRel(msg_id), now);
                        c.send(out, Packet::PubRel(msg_id));
                    }
                    Some(Wait::PubComp(m)) if m == msg_id => c.send(out, Packet::PubRel(msg_id)),
                    _ => {}
                }
            }
            Packet::PubComp(msg_id) => {
                if matches!(&c.out.inflight, Some(f) if f.wait == Wait::PubComp(msg_id)) {
                    c.out.inflight = None;
                    self.pump(id, now, out);
                }
            }
            Packet::PubRel(msg_id) => {
                c.inbound.release(msg_id);
                c.send(out, Packet::PubComp(msg_id));
            }
            Packet::Subscribe {
                qos, msg_id, topic, ..
            } => self.subscribe(id, qos, msg_id, topic, out),
            Packet::Unsubscribe { msg_id, topic } => {
                let filter = match topic {
                    SubTopic::Name(n) => Some(n),
                    SubTopic::Predefined(i) => self.predefined.name(i).map(str::to_owned),
                    SubTopic::Short(s) => short_name(s),
                };
                if let Some(f) = filter {
                    if c.subs.remove(&f).is_some() {
                        out.push(Action::Unsubscribe {
                            client: id.to_owned(),
                            filter: f,
                        });
                        out.push(Action::Save(id.to_owned()));
                    }
                }
                c.send(out, Packet::UnsubAck(msg_id));
            }
            Packet::WillTopicUpd(w) => {
                if w.is_none() {
                    c.will_msg = Bytes::new();
                }
                c.will = w;
                c.send(out, Packet::WillTopicResp(ReturnCode::Accepted));
                out.push(Action::Save(id.to_owned()));
            }
            Packet::WillMsgUpd(m) => {
                c.will_msg = m;
                c.send(out, Packet::WillMsgResp(ReturnCode::Accepted));
                out.push(Action::Save(id.to_owned()));
            }
            // Messages only a gateway sends, or a CONNECT flow message out of place.
            _ => self.counters.not_connected += 1,
        }
    }

    fn subscribe(
        &mut self,
        id: &str,
        qos: Qos,
        msg_id: u16,
        topic: SubTopic,
        out: &mut Vec<Action>,
    ) {
        let max_topics = self.limits.max_topics;
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let refuse = |c: &super::session::Client, out: &mut Vec<Action>, rc| {
            c.send(
                out,
                Packet::SubAck {
                    qos: Qos::Zero,
                    topic_id: 0,
                    msg_id,
                    rc,
                },
            )
        };
        if qos == Qos::MinusOne {
            return refuse(c, out, ReturnCode::NotSupported);
        }
        let (filter, topic_id) = match topic {
            SubTopic::Name(f) if !topic::valid_topic_filter(&f) => {
                return refuse(c, out, ReturnCode::NotSupported)
            }
            SubTopic::Name(f) if f.contains(['+', '#']) => (f, 0),
            SubTopic::Name(f) => match c.topics.assign(&f, true, max_topics) {
                Ok(t) => (f, t),
                Err(_) => return refuse(c, out, ReturnCode::Congestion),
            },
            SubTopic::Predefined(i) => match self.predefined.name(i) {
                Some(n) => (n.to_owned(), i),
                None => return refuse(c, out, ReturnCode::InvalidTopicId),
            },
            SubTopic::Short(s) => match short_name(s) {
                Some(n) => (n, 0),
                None => return refuse(c, out, ReturnCode::InvalidTopicId),
            },
        };
        if !c.subs.contains_key(&filter) && c.subs.len() >= max_topics {
            return refuse(c, out, ReturnCode::Congestion);
        }
        c.send(
            out,
            Packet::SubAck {
                qos,
                topic_id,
                msg_id,
                rc: ReturnCode::Accepted,
            },
        );
        if c.subs.insert(filter.clone(), qos).is_none() {
            out.push(Action::Subscribe {
                client: id.to_owned(),
                filter,
            });
        }
        out.push(Action::Save(id.to_owned()));
    }

    /// A PUBLISH from a client (`None`: QoS -1 from a peer without a connection).
    pub(super) fn publish_in(
        &mut self,
        id: Option<&str>,
        p: Publish,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let rate = self.limits.max_rate;
        let mut client = id.and_then(|id| self.clients.get_mut(id));
        if let Some(c) = client.as_mut() {
            // A resend of what was accepted costs no token: refusing it would make the node
            // send it again as new, and it would be published twice.
            if c.inbound.is_duplicate(p.qos, p.msg_id, p.dup) {
                let ack = match p.qos {
                    Qos::Two => Packet::PubRec(p.msg_id),
                    _ => Packet::PubAck {
                        topic_id: raw_id(&p.topic),
                        msg_id: p.msg_id,
                        rc: ReturnCode::Accepted,
                    },
                };
                c.send(out, ack);
                return;
            }
            if !c.allow(rate, now) {
                self.counters.rate_limited += 1;
                if matches!(p.qos, Qos::One | Qos::Two) {
                    c.send(
                        out,
                        Packet::PubAck {
                            topic_id: raw_id(&p.topic),
                            msg_id: p.msg_id,
                            rc: ReturnCode::Congestion,
                        },
                    );
                }
                return;
            }
        }
        let name = match (&p.topic, &client) {
            (TopicRef::Id(i), Some(c)) => c.topics.name(*i).map(str::to_owned),
            (TopicRef::Id(_), None) => None,
            (TopicRef::Predefined(i), _) => self.predefined.name(*i).map(str::to_owned),
            (TopicRef::Short(s), _) => short_name(*s),
        };
        let Some(name) = name else {
            self.counters.invalid_topic += 1;
            if let (Some(c), true) = (&client, p.qos != Qos::MinusOne) {
                c.send(
                    out,
                    Packet::PubAck {
                        topic_id: raw_id(&p.topic),
                        msg_id: p.msg_id,
                        rc: ReturnCode::InvalidTopicId,
                    },
                );
            }
            return;
        };
        let first = match (&mut client, p.qos) {
            (Some(c), Qos::One) => c.inbound.qos1_first(p.msg_id, p.dup),
            (Some(c), Qos::Two) => c.inbound.qos2_first(p.msg_id),
            _ => true,
        };
        if let Some(c) = &client {
            match p.qos {
                Qos::One => c.send(
                    out,
                    Packet::PubAck {
                        topic_id: raw_id(&p.topic),
                        msg_id: p.msg_id,
                        rc: ReturnCode::Accepted,
                    },
                ),
                Qos::Two => c.send(out, Packet::PubRec(p.msg_id)),
                _ => {}
            }
        }
        if first {
            self.counters.publishes_in += 1;
            out.push(Action::Publish {
                topic: name,
                payload: p.data,
                qos: p.qos.mqtt(),
                retain: p.retain,
            });
        }
    }

    /// A bus message for `id`'s subscription `filter`. Delivered once even when several of the
    /// client's filters match: only through the first of them.
    pub fn deliver(
        &mut self,
        id: &str,
        filter: &str,
        msg: &Message,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let mut matching = c.subs.iter().filter(|(f, _)| topic::matches(f, &msg.topic));
        let Some((first, _)) = matching.next() else {
            return;
        };
        if first != filter {
            return;
        }
        let sub_qos = c
            .subs
            .iter()
            .filter(|(f, _)| topic::matches(f, &msg.topic))
            .map(|(_, q)| *q)
            .max()
            .unwrap_or(Qos::Zero);
        let qos = sub_qos.min(Qos::from_mqtt(msg.qos));
        if matches!(c.state, State::Disconnected | State::Lost) && qos == Qos::Zero {
            return;
        }
        let q = Queued {
            topic: msg.topic.clone(),
            payload: msg.payload.clone(),
            qos,
            retain: msg.retain,
        };
        if c.out.push(q, self.limits.max_buffered) {
            self.counters.buffer_dropped += 1;
        }
        if c.connected() {
            self.pump(id, now, out);
        } else {
            // Buffered for a client that is away: kept across a restart too.
            out.push(Action::Save(id.to_owned()));
        }
    }

    /// Sends what the client can take now: REGISTER first for a topic it doesn't know, then the
    /// PUBLISH; QoS 0 goes straight out, QoS 1/2 one at a time. An awake client gets PINGRESP
    /// once nothing is left, and goes back to sleep.
    pub(super) fn pump(&mut self, id: &str, now: Instant, out: &mut Vec<Action>) {
        let max_topics = self.limits.max_topics;
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        if !matches!(c.state, State::Active | State::Awake) {
            return;
        }
        while c.out.inflight.is_none() {
            let Some(head) = c.out.queue.front() else {
                break;
            };
            let name = head.topic.clone();
            let t = match topics::route(&name, &self.predefined, &mut c.topics, max_topics) {
                Route::Full => {
                    c.out.queue.pop_front();
                    self.counters.buffer_dropped += 1;
                    continue;
                }
                Route::Register(topic_id) => {
                    let msg_id = c.out.next_msg_id();
                    let p = Packet::Register {
                        topic_id,
                        msg_id,
                        topic: name,
                    };
                    c.send(out, p.clone());
                    c.out.start(Wait::RegAck { topic_id, msg_id }, p, now);
                    break;
                }
                Route::Ready(t) => t,
            };
            let Some(m) = c.out.queue.pop_front() else {
                break;
            };
            let msg_id = if m.qos == Qos::Zero {
                0
            } else {
                c.out.next_msg_id()
            };
            let p = Publish {
                dup: false,
                qos: m.qos,
                retain: m.retain,
                topic: t,
                msg_id,
                data: m.payload,
            };
            self.counters.publishes_out += 1;
            c.send(out, Packet::Publish(p.clone()));
            match m.qos {
                Qos::One => c
                    .out
                    .start(Wait::PubAck(p.clone()), Packet::Publish(p), now),
                Qos::Two => c
                    .out
                    .start(Wait::PubRec(p.clone()), Packet::Publish(p), now),
                _ => {}
            }
        }
        if c.state == State::Awake && c.out.idle() {
            c.send(out, Packet::PingResp);
            c.state = State::Asleep {
                until: now + grace(c.sleep),
            };
            out.push(Action::Save(id.to_owned()));
        }
    }
}

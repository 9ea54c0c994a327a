//! Message -> datagram: 1-byte length up to 255 bytes, the 3-byte form above.

use super::*;

impl Packet {
    /// Appends the encoded message: 1-byte length up to 255 bytes, the 3-byte form above.
    /// Callers keep bodies under [`MAX_LEN`]; a longer one is truncated by the length field.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(16);
        let t = self.encode_body(&mut body);
        put_len(out, body.len() + 1);
        out.push(t);
        out.extend_from_slice(&body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        self.encode(&mut v);
        v
    }

    fn encode_body(&self, b: &mut Vec<u8>) -> u8 {
        let u16b = |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_be_bytes());
        match self {
            Packet::Advertise { gw_id, duration } => {
                b.push(*gw_id);
                u16b(b, *duration);
                ADVERTISE
            }
            Packet::SearchGw { radius } => {
                b.push(*radius);
                SEARCHGW
            }
            Packet::GwInfo { gw_id, gw_add } => {
                b.push(*gw_id);
                b.extend_from_slice(gw_add);
                GWINFO
            }
            Packet::Connect {
                will,
                clean_session,
                duration,
                client_id,
            } => {
                let f = Flags {
                    will: *will,
                    clean_session: *clean_session,
                    ..Flags::default()
                };
                b.push(f.encode());
                b.push(PROTOCOL_ID);
                u16b(b, *duration);
                b.extend_from_slice(client_id.as_bytes());
                CONNECT
            }
            Packet::ConnAck(rc) => {
                b.push(rc.byte());
                CONNACK
            }
            Packet::WillTopicReq => WILLTOPICREQ,
            Packet::WillTopic(w) | Packet::WillTopicUpd(w) => {
                if let Some(w) = w {
                    let f = Flags {
                        qos: Some(w.qos),
                        retain: w.retain,
                        ..Flags::default()
                    };
                    b.push(f.encode());
                    b.extend_from_slice(w.topic.as_bytes());
                }
                if matches!(self, Packet::WillTopic(_)) {
                    WILLTOPIC
                } else {
                    WILLTOPICUPD
                }
            }
            Packet::WillMsgReq => WILLMSGREQ,
            Packet::WillMsg(m) => {
                b.extend_from_slice(m);
                WILLMSG
            }
            Packet::WillMsgUpd(m) => {
                b.extend_from_slice(m);
                WILLMSGUPD
            }
            Packet::Register {
                topic_id,
                msg_id,
                topic,
            } => {
                u16b(b, *topic_id);
                u16b(b, *msg_id);
                b.extend_from_slice(topic.as_bytes());
                REGISTER
            }
            Packet::RegAck {
                topic_id,
                msg_id,
                rc,
            }
            | Packet::PubAck {
                topic_id,
                msg_id,
                rc,
            } => {
                u16b(b, *topic_id);
                u16b(b, *msg_id);
                b.push(rc.byte());
                if matches!(self, Packet::RegAck { .. }) {
                    REGACK
                } else {
                    PUBACK
                }
            }
            Packet::Publish(p) => {
                let f = Flags {
                    dup: p.dup,
                    qos: Some(p.qos),
                    retain: p.retain,
                    topic_id_type: Some(p.topic.id_type()),
                    ..Flags::default()
                };
                b.push(f.encode());
                b.extend_from_slice(&p.topic.raw());
                u16b(b, p.msg_id);
                b.extend_from_slice(&p.data);
                PUBLISH
            }
            Packet::PubComp(id) => {
                u16b(b, *id);
                PUBCOMP
            }
            Packet::PubRec(id) => {
                u16b(b, *id);
                PUBREC
            }
            Packet::PubRel(id) => {
                u16b(b, *id);
                PUBREL
            }
            Packet::UnsubAck(id) => {
                u16b(b, *id);
                UNSUBACK
            }
            Packet::Subscribe {
                dup,
                qos,
                msg_id,
                topic,
            } => {
                sub_body(b, *dup, *qos, *msg_id, topic);
                SUBSCRIBE
            }
            Packet::Unsubscribe { msg_id, topic } => {
                sub_body(b, false, Qos::Zero, *msg_id, topic);
                UNSUBSCRIBE
            }
            Packet::SubAck {
                qos,
                topic_id,
                msg_id,
                rc,
            } => {
                let f = Flags {
                    qos: Some(*qos),
                    ..Flags::default()
                };
                b.push(f.encode());
                u16b(b, *topic_id);
                u16b(b, *msg_id);
                b.push(rc.byte());
                SUBACK
            }
            Packet::PingReq(id) => {
                if let Some(id) = id {
                    b.extend_from_slice(id.as_bytes());
                }
                PINGREQ
            }
            Packet::PingResp => PINGRESP,
            Packet::Disconnect(d) => {
                if let Some(d) = d {
                    u16b(b, *d);
                }
                DISCONNECT
            }
            Packet::WillTopicResp(rc) => {
                b.push(rc.byte());
                WILLTOPICRESP
            }
            Packet::WillMsgResp(rc) => {
                b.push(rc.byte());
                WILLMSGRESP
            }
        }
    }
}

fn sub_body(b: &mut Vec<u8>, dup: bool, qos: Qos, msg_id: u16, topic: &SubTopic) {
    let (id_type, raw): (TopicIdType, &[u8]) = match topic {
        SubTopic::Name(n) => (TopicIdType::Normal, n.as_bytes()),
        SubTopic::Predefined(_) => (TopicIdType::Predefined, &[]),
        SubTopic::Short(s) => (TopicIdType::Short, s),
    };
    let f = Flags {
        dup,
        qos: Some(qos),
        topic_id_type: Some(id_type),
        ..Flags::default()
    };
    b.push(f.encode());
    b.extend_from_slice(&msg_id.to_be_bytes());
    match topic {
        SubTopic::Predefined(id) => b.extend_from_slice(&id.to_be_bytes()),
        _ => b.extend_from_slice(raw),
    }
}

fn put_len(out: &mut Vec<u8>, body_and_type: usize) {
    if body_and_type < 255 {
        out.push((body_and_type + 1) as u8);
    } else {
        let total = (body_and_type + 3).min(MAX_LEN);
        out.push(0x01);
        out.extend_from_slice(&(total as u16).to_be_bytes());
    }
}

impl Frame {
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some((ctrl, node)) = &self.forwarded {
            put_len(out, node.len() + 2);
            out.push(ENCAPSULATED);
            out.push(*ctrl);
            out.extend_from_slice(node);
        }
        self.packet.encode(out);
    }
}

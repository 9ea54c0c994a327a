//! The upstream session's delivery bookkeeping, without I/O: which exchange holds which packet
//! id, what the in-flight window holds, and what to send again on a resumed session.
//!
//! Packet ids are ours, never the client library's and never inferred from the order of
//! events. A row's id is a function of its outbox id, so it is known before the PUBLISH is
//! written, it is the same after a reconnect and after a restart (a broker that kept the session
//! sees the same exchange resumed, not a new message), and nothing has to be written to disk for
//! it. Our own status publishes take ids from a small range the rows never use. An id is not
//! handed out again while any exchange holding it (PUBLISH sent, or PUBREC received and PUBREL
//! sent) is open; an acknowledgement for an id, or of a kind, that no open exchange expects is
//! reported and changes nothing.

use std::collections::HashMap;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::{Packet, PubRel, Publish};

/// Ids kept for the gateway's own publishes (status), at the top of the id space.
const OWN_IDS: u16 = 32;
/// Ids 1..=ROW_IDS belong to outbox rows.
const ROW_IDS: i64 = (u16::MAX - OWN_IDS) as i64;

/// The packet id of outbox row `row`, for as long as the row exists.
pub fn row_pkid(row: i64) -> u16 {
    (row.rem_euclid(ROW_IDS) + 1) as u16
}

/// What an exchange delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Row(i64),
    /// A status publish of the gateway itself: no row behind it.
    Own,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
struct Exchange {
    item: Item,
    publish: Publish,
    phase: Phase,
    /// When it was first handed out, for resending in the original order.
    order: u64,
}

/// The answer to handing a row to the session.
#[derive(Debug, PartialEq)]
pub enum Handed {
    /// Send this PUBLISH.
    Send(Publish),
    /// The row is already in flight (resumed from the previous connection): nothing to send.
    InFlight,
    /// Its packet id is held by another open exchange; hand the row again after an ack.
    Busy,
}

/// What an incoming packet did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The exchange that completed: its row may be deleted.
    pub done: Option<Item>,
    /// A packet to send in answer (PUBREL).
    pub reply: Option<Packet>,
    /// Why the packet changed nothing, when it should have changed something.
    pub ignored: Option<String>,
}

impl Outcome {
    fn ignored(why: String) -> Outcome {
        Outcome {
            ignored: Some(why),
            ..Outcome::default()
        }
    }
}

#[derive(Debug, Default)]
pub struct Delivery {
    open: HashMap<u16, Exchange>,
    rows: usize,
    /// Rows at QoS 2 among `rows`.
    rows_qos2: usize,
    next_order: u64,
    next_own: u16,
}

impl Delivery {
    /// Rows in flight: what the window counts.
    pub fn rows_in_flight(&self) -> usize {
        self.rows
    }

    /// QoS 2 rows in flight.
    pub fn qos2_in_flight(&self) -> usize {
        self.rows_qos2
    }

    /// True while a status publish of ours awaits its PUBACK.
    pub fn own_pending(&self) -> bool {
        self.open.values().any(|e| e.item == Item::Own)
    }

    /// Every row in flight.
    pub fn open_rows(&self) -> impl Iterator<Item = i64> + '_ {
        self.open.values().filter_map(|e| match e.item {
            Item::Row(id) => Some(id),
            Item::Own => None,
        })
    }

    /// The lowest row id in flight.
    pub fn oldest_row(&self) -> Option<i64> {
        self.open_rows().min()
    }

    fn open_exchange(&mut self, pkid: u16, item: Item, publish: &Publish) {
        self.open.insert(
            pkid,
            Exchange {
                item,
                publish: publish.clone(),
                phase: Phase::Published,
                order: self.next_order,
            },
        );
        self.next_order += 1;
        if matches!(item, Item::Row(_)) {
            self.rows += 1;
            self.rows_qos2 += usize::from(publish.qos == QoS::ExactlyOnce);
        }
    }

    /// Why row `row` cannot be handed out now, if it cannot.
    pub fn blocked(&self, row: i64) -> Option<Handed> {
        let open = self.open.get(&row_pkid(row))?;
        Some(if open.item == Item::Row(row) {
            Handed::InFlight
        } else {
            Handed::Busy
        })
    }

    /// Gives up an exchange that was opened but could not be written (the packet could not be
    /// encoded); its row stays in the outbox.
    pub fn abandon(&mut self, pkid: u16) {
        self.close(pkid);
    }

    /// Hands outbox row `row` to the session at QoS 1 or 2 (0 is sent as 1: a row leaves the
    /// outbox only on an acknowledgement).
    pub fn send_row(
        &mut self,
        row: i64,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Handed {
        if let Some(why) = self.blocked(row) {
            return why;
        }
        let pkid = row_pkid(row);
        let qos = if qos >= 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut publish = Publish::from_bytes(topic, qos, payload);
        publish.retain = retain;
        publish.pkid = pkid;
        self.open_exchange(pkid, Item::Row(row), &publish);
        Handed::Send(publish)
    }

    /// A retained QoS 1 status publish of the gateway; `None` while every id kept for them is
    /// held (only if the broker stops acknowledging).
    pub fn send_own(&mut self, topic: &str, payload: &str) -> Option<Publish> {
        for _ in 0..OWN_IDS {
            self.next_own = (self.next_own + 1) % OWN_IDS;
            let pkid = ROW_IDS as u16 + 1 + self.next_own;
            if self.open.contains_key(&pkid) {
                continue;
            }
            let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
            publish.retain = true;
            publish.pkid = pkid;
            self.open_exchange(pkid, Item::Own, &publish);
            return Some(publish);
        }
        None
    }

    fn close(&mut self, pkid: u16) -> Option<Item> {
        let ex = self.open.remove(&pkid)?;
        if matches!(ex.item, Item::Row(_)) {
            self.rows -= 1;
            self.rows_qos2 -= usize::from(ex.publish.qos == QoS::ExactlyOnce);
        }
        Some(ex.item)
    }

    /// An acknowledgement from the broker.
    pub fn incoming(&mut self, packet: &Packet) -> Outcome {
        match packet {
            Packet::PubAck(ack) => self.puback(ack.pkid),
            Packet::PubRec(rec) => self.pubrec(rec.pkid),
            Packet::PubComp(comp) => self.pubcomp(comp.pkid),
            _ => Outcome::default(),
        }
    }

    fn puback(&mut self, pkid: u16) -> Outcome {
        match self.open.get(&pkid).map(|e| e.publish.qos) {
            Some(QoS::AtLeastOnce) => Outcome {
                done: self.close(pkid),
                ..Outcome::default()
            },
            Some(_) => Outcome::ignored(format!("PUBACK for QoS 2 exchange {pkid}")),
            None => Outcome::ignored(format!("PUBACK for packet id {pkid}, which is not open")),
        }
    }

    fn pubrec(&mut self, pkid: u16) -> Outcome {
        let reply = Some(Packet::PubRel(PubRel::new(pkid)));
        match self.open.get_mut(&pkid) {
            Some(ex) if ex.publish.qos == QoS::ExactlyOnce => {
                // A repeated PUBREC (after a resend) is answered again.
                ex.phase = Phase::Released;
                Outcome {
                    reply,
                    ..Outcome::default()
                }
            }
            Some(_) => Outcome::ignored(format!("PUBREC for QoS 1 exchange {pkid}")),
            // The broker holds an exchange we no longer know (its row was delivered or dropped
            // before a restart): releasing it frees the id on its side, so that the next row
            // with this id is not taken for a duplicate.
            None => Outcome {
                reply,
                ignored: Some(format!("PUBREC for packet id {pkid}, which is not open")),
                ..Outcome::default()
            },
        }
    }

    fn pubcomp(&mut self, pkid: u16) -> Outcome {
        match self.open.get(&pkid).map(|e| e.phase) {
            Some(Phase::Released) => Outcome {
                done: self.close(pkid),
                ..Outcome::default()
            },
            Some(Phase::Published) => {
                Outcome::ignored(format!("PUBCOMP for packet id {pkid} before its PUBREC"))
            }
            None => Outcome::ignored(format!("PUBCOMP for packet id {pkid}, which is not open")),
        }
    }

    /// A new connection's CONNACK. With the session present, every open exchange goes again in
    /// its original order with its original id: PUBREL past PUBREC, the PUBLISH with DUP
    /// before it. Without one, the broker knows none of them: every row is forgotten here and
    /// sent again as a new message from the outbox. Our own status publishes are never resent:
    /// the birth that follows every CONNACK supersedes them.
    pub fn resume(&mut self, session_present: bool) -> Vec<Packet> {
        self.open.retain(|_, e| e.item != Item::Own);
        if !session_present {
            self.open.clear();
            self.rows = 0;
            self.rows_qos2 = 0;
            return Vec::new();
        }
        let mut open: Vec<&Exchange> = self.open.values().collect();
        open.sort_by_key(|e| e.order);
        open.into_iter()
            .map(|e| match e.phase {
                Phase::Released => Packet::PubRel(PubRel::new(e.publish.pkid)),
                Phase::Published => {
                    let mut publish = e.publish.clone();
                    publish.dup = true;
                    Packet::Publish(publish)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{PubAck, PubComp, PubRec};

    fn publish(h: Handed) -> Publish {
        match h {
            Handed::Send(p) => p,
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }

    fn row(d: &mut Delivery, id: i64, qos: u8) -> Publish {
        publish(d.send_row(id, "s/g/d/t", Bytes::from(format!("{id}")), qos, false))
    }

    fn ack(d: &mut Delivery, p: Packet) -> Option<Item> {
        d.incoming(&p).done
    }

    #[test]
    fn a_rows_id_is_known_when_handed_out_and_stable() {
        let mut d = Delivery::default();
        let p = row(&mut d, 41, 1);
        assert_eq!(p.pkid, row_pkid(41));
        assert_eq!((p.qos, p.dup), (QoS::AtLeastOnce, false));
        assert_eq!(
            d.send_row(41, "s/g/d/t", Bytes::new(), 1, false),
            Handed::InFlight
        );
        assert_eq!(d.rows_in_flight(), 1);
        assert_eq!(
            ack(&mut d, Packet::PubAck(PubAck::new(p.pkid))),
            Some(Item::Row(41))
        );
        assert_eq!(d.rows_in_flight(), 0);
        // Row ids map onto the row range and never onto the ids of our own publishes.
        assert_eq!(row_pkid(0), 1);
        assert_eq!(row_pkid(ROW_IDS - 1), ROW_IDS as u16);
        assert_eq!(row_pkid(ROW_IDS), 1);
        let own = d.send_own("s/g/status", "online").unwrap();
        assert!(own.pkid > ROW_IDS as u16 && own.retain);
    }

    #[test]
    fn an_id_waiting_for_pubcomp_is_never_given_to_another_row() {
        let mut d = Delivery::default();
        let first = row(&mut d, 5, 2);
        assert_eq!(
            d.incoming(&Packet::PubRec(PubRec::new(first.pkid))).reply,
            Some(Packet::PubRel(PubRel::new(first.pkid)))
        );
        // The row that maps onto the same id waits while the PUBREL is outstanding.
        let twin = 5 + ROW_IDS;
        assert_eq!(d.send_row(twin, "t", Bytes::new(), 1, false), Handed::Busy);
        // The old exchange's PUBCOMP completes the old row, not the waiting one.
        assert_eq!(
            ack(&mut d, Packet::PubComp(PubComp::new(first.pkid))),
            Some(Item::Row(5))
        );
        assert_eq!(row(&mut d, twin, 1).pkid, first.pkid);
        assert_eq!(
            ack(&mut d, Packet::PubAck(PubAck::new(first.pkid))),
            Some(Item::Row(twin))
        );
    }

    #[test]
    fn acknowledgements_nobody_expects_delete_nothing() {
        let mut d = Delivery::default();
        let q1 = row(&mut d, 1, 1);
        let q2 = row(&mut d, 2, 2);
        for stray in [
            Packet::PubAck(PubAck::new(999)),
            Packet::PubComp(PubComp::new(999)),
            Packet::PubAck(PubAck::new(q2.pkid)),
            Packet::PubComp(PubComp::new(q2.pkid)),
            Packet::PubRec(PubRec::new(q1.pkid)),
            Packet::PubComp(PubComp::new(q1.pkid)),
        ] {
            let out = d.incoming(&stray);
            assert_eq!(out.done, None, "{stray:?}");
            assert!(out.ignored.is_some(), "{stray:?}");
        }
        assert_eq!(d.rows_in_flight(), 2);
        // A PUBREC for an id we do not hold is released so the broker frees it.
        let out = d.incoming(&Packet::PubRec(PubRec::new(999)));
        assert_eq!(out.reply, Some(Packet::PubRel(PubRel::new(999))));
        assert_eq!(out.done, None);
    }

    #[test]
    fn mixed_qos_windows_complete_each_row_by_its_own_id() {
        let mut d = Delivery::default();
        let sent: Vec<Publish> = (1..=10)
            .map(|i| row(&mut d, i, if i % 3 == 0 { 2 } else { 1 }))
            .collect();
        let mut done = Vec::new();
        // Acks out of order, QoS 2 in two steps.
        for p in sent.iter().rev() {
            if p.qos == QoS::ExactlyOnce {
                assert_eq!(ack(&mut d, Packet::PubRec(PubRec::new(p.pkid))), None);
            } else {
                done.extend(ack(&mut d, Packet::PubAck(PubAck::new(p.pkid))));
            }
        }
        for p in sent.iter().filter(|p| p.qos == QoS::ExactlyOnce) {
            done.extend(ack(&mut d, Packet::PubComp(PubComp::new(p.pkid))));
        }
        done.sort_by_key(|i| match i {
            Item::Row(r) => *r,
            Item::Own => -1,
        });
        assert_eq!(done, (1..=10).map(Item::Row).collect::<Vec<_>>());
        assert_eq!((d.rows_in_flight(), d.oldest_row()), (0, None));
    }

    #[test]
    fn resume_with_session_resends_pubrel_and_dup_publishes_in_order() {
        let mut d = Delivery::default();
        let a = row(&mut d, 10, 2);
        let b = row(&mut d, 11, 1);
        let c = row(&mut d, 12, 2);
        d.send_own("s/g/status", "online").unwrap();
        d.incoming(&Packet::PubRec(PubRec::new(a.pkid)));
        let again = d.resume(true);
        let mut b_dup = b.clone();
        b_dup.dup = true;
        let mut c_dup = c.clone();
        c_dup.dup = true;
        assert_eq!(
            again,
            vec![
                Packet::PubRel(PubRel::new(a.pkid)),
                Packet::Publish(b_dup),
                Packet::Publish(c_dup),
            ]
        );
        assert!(
            !d.own_pending(),
            "an old status is superseded by the new birth"
        );
        // The resumed exchanges complete across the reconnect.
        assert_eq!(
            ack(&mut d, Packet::PubComp(PubComp::new(a.pkid))),
            Some(Item::Row(10))
        );
        assert_eq!(
            ack(&mut d, Packet::PubAck(PubAck::new(b.pkid))),
            Some(Item::Row(11))
        );
        // The outbox hands the resumed row again: it is not sent a second time.
        assert_eq!(
            d.send_row(12, "t", Bytes::new(), 2, false),
            Handed::InFlight
        );
        assert_eq!(d.oldest_row(), Some(12));
    }

    #[test]
    fn resume_without_session_forgets_every_exchange_so_rows_go_again_as_new() {
        let mut d = Delivery::default();
        let a = row(&mut d, 10, 2);
        row(&mut d, 11, 1);
        d.incoming(&Packet::PubRec(PubRec::new(a.pkid)));
        assert!(d.resume(false).is_empty());
        assert_eq!(d.rows_in_flight(), 0);
        // An ack left over from the old connection matches nothing now.
        assert_eq!(ack(&mut d, Packet::PubComp(PubComp::new(a.pkid))), None);
        let again = row(&mut d, 10, 2);
        assert_eq!((again.pkid, again.dup), (a.pkid, false));
    }

    #[test]
    fn own_publishes_cycle_through_their_ids_and_stop_when_all_are_held() {
        let mut d = Delivery::default();
        let ids: Vec<u16> = (0..OWN_IDS)
            .map(|_| d.send_own("t", "x").unwrap().pkid)
            .collect();
        assert!(ids.iter().all(|&p| p > ROW_IDS as u16));
        assert_eq!(d.send_own("t", "x"), None);
        assert_eq!(
            ack(&mut d, Packet::PubAck(PubAck::new(ids[3]))),
            Some(Item::Own)
        );
        assert_eq!(d.send_own("t", "x").map(|p| p.pkid), Some(ids[3]));
        assert_eq!(d.rows_in_flight(), 0);
    }
}

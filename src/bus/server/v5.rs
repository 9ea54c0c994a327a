//! The connection's MQTT 5 extras: the reason codes of PUBACK/PUBREC and UNSUBACK that depend on
//! what the router did (and what a PUBREC sent means for the QoS 2 exchange and its stored
//! packet id), and the DISCONNECT a v5 client gets before the server closes it.

use tokio::io::AsyncWriteExt;

use super::{Connection, End};
use crate::bus::codec::reason::mqtt5;
use crate::bus::codec::{self, Packet};
use crate::bus::router::{Commit, Stats};
use crate::bus::session::Action;
use crate::bus::Message;

impl Connection {
    /// Routes a client's PUBLISH unless the ACL denies it. Returns the MQTT 5 reason code for
    /// its acknowledgement: 0x87 denied, 0x10 no matching subscribers, else 0.
    pub(super) async fn route(&mut self, msg: Message) -> Result<u8, End> {
        if !self.may_publish(&msg.topic) {
            return Ok(mqtt5::NOT_AUTHORIZED);
        }
        let from = self.attached.as_ref().map(|a| a.client_id.as_str());
        let router = &self.router;
        // A QoS 1/2 publish the forward rules take is acknowledged once the outbox has
        // committed it: the acknowledgement that follows waits in `held` for that commit.
        let route = async move {
            if msg.qos > 0 {
                router.route_acked(msg, from).await
            } else {
                (router.route_from(msg, from).await, Commit::default())
            }
        };
        let (matched, commit) = tokio::select! {
            r = route => r,
            _ = self.shutdown.cancelled() => return Err(End::Shutdown),
        };
        self.held.wait_for(commit);
        Ok(if matched == 0 {
            mqtt5::NO_MATCHING_SUBSCRIBERS
        } else {
            mqtt5::SUCCESS
        })
    }

    /// Puts an MQTT 5 reason code into the PUBACK/PUBREC that follows a routed PUBLISH: 0x87 when
    /// the ACL denied it, 0x10 when nobody subscribes to it. A refused QoS 2 message is done.
    pub(super) fn ack_reason(&mut self, next: Option<&mut Action>, reason: u8) {
        let Some(Action::Send(ack)) = next else {
            return;
        };
        let (kind, pid) = match ack {
            Packet::Puback(pid) => (codec::AckKind::Puback, *pid),
            Packet::Pubrec(pid) => (codec::AckKind::Pubrec, *pid),
            _ => return,
        };
        if reason >= mqtt5::UNSPECIFIED_ERROR {
            self.session.forget_incoming(pid);
        }
        // A string only for the failure; 0x10 is a success code.
        let reason_string = (reason == mqtt5::NOT_AUTHORIZED && self.session.wants_problem_info())
            .then(|| "not authorized".into());
        *ack = Packet::ack(kind, pid, reason, reason_string, Vec::new());
    }

    /// A PUBREC for incoming QoS 2 `pid` goes out (after its message was routed and, if the
    /// forward rules took it, committed): a persistent session's store keeps the id from here.
    /// One with a failure `reason` (MQTT 5, >= 0x80) ends the exchange instead: nothing is kept,
    /// and a resend of `pid` is a new message.
    pub(super) fn pubrec_sent(&mut self, pid: u16, reason: u8) {
        if reason >= mqtt5::UNSPECIFIED_ERROR {
            self.session.forget_incoming(pid);
            return;
        }
        let persist = self.router.persist.as_ref().zip(self.attached.as_ref());
        if let Some((p, a)) = persist.filter(|(_, a)| a.persistent) {
            // Not after an early PUBREL, which ended the exchange.
            if self.session.holds_incoming(pid) {
                p.qos2_acknowledged(&a.client_id, pid);
            }
        }
    }

    /// Tells an MQTT 5 client why the server closes its connection (nothing for 3.1.1, nor
    /// after a write that was cut short); the caller bounds the wait for a client that does not
    /// read.
    pub(super) async fn last_word(&mut self, code: u8, why: &str) {
        if self.torn {
            return;
        }
        let Some(packet) = self.session.disconnect_packet(code, why) else {
            return;
        };
        self.send(&packet);
        let wbuf = std::mem::take(&mut self.wbuf);
        let write = async {
            self.io.write_all(&wbuf).await?;
            self.io.flush().await
        };
        if let Ok(()) = write.await {
            Stats::add(&self.router.stats.bytes_out, wbuf.len() as u64);
        }
    }
}

/// MQTT 5: 0x11 "no subscription existed" in the UNSUBACK that follows, for those filters.
pub(super) fn unsuback_codes(next: Option<&mut Action>, existed: &[bool]) {
    if let Some(Action::Send(Packet::Unsuback { codes, .. })) = next {
        for (code, had) in codes.iter_mut().zip(existed) {
            if !had {
                *code = mqtt5::NO_SUBSCRIPTION_EXISTED;
            }
        }
    }
}

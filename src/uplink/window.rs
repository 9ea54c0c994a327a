//! What the uplink sends next: rows from the lanes into the in-flight window.

use bytes::Bytes;
use rumqttc::Packet;
use tokio::time::Instant;

use super::delivery::Handed;
use super::link::Writer;
use super::{lanes, Uplink, MAX_PACKET, QOS2_WINDOW, WRITE_HIGH};

impl Uplink {
    /// Hands rows to the connection while the in-flight window has room, one per
    /// acknowledgement, by lane priority (see `lanes`). A steady stream matters: if the link
    /// sat idle until half the window was acknowledged, a broker with Nagle on (Mosquitto's
    /// default) would hold its PUBACKs for our delayed ACKs and throughput would collapse.
    /// Returns when to try again if only rate-limited replay is waiting.
    pub(super) async fn fill_window(
        &mut self,
        newest: i64,
        wr: &mut Writer,
    ) -> Result<Option<Instant>, crate::store::StoreError> {
        let window = self.cfg.max_inflight as usize;
        let Some(lanes) = self.lanes.as_mut() else {
            return Ok(None);
        };
        let gone = *self.acks_done.borrow();
        while let Some(&(n, id)) = self.unconfirmed.front() {
            if n > gone {
                break;
            }
            self.unconfirmed.pop_front();
            self.unconfirmed_ids.remove(&id);
        }
        let mut wake = None;
        while self.delivery.rows_in_flight() < window && wr.pending() < WRITE_HIGH {
            let replay_ok = self.replay_window.may_send(window);
            let next = match lanes
                .next(&self.store, newest, Instant::now(), replay_ok)
                .await?
            {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(at) => {
                    wake = Some(at);
                    break;
                }
            };
            let id = next.row.id;
            // Acknowledged, or resumed and left to complete on its own (see `carried`).
            if self.unconfirmed_ids.contains(&id) || self.carried.remove(&id) {
                continue;
            }
            match self.delivery.blocked(id) {
                // Resumed from the previous connection and still in flight.
                Some(Handed::InFlight) => continue,
                // Its id is held by an exchange still open: it goes next, after an ack.
                Some(_) => {
                    lanes.unread(next);
                    break;
                }
                None => {}
            }
            if next.row.qos >= 2 && self.delivery.qos2_in_flight() >= QOS2_WINDOW {
                lanes.unread(next);
                break;
            }
            if 9 + next.row.topic.len() + next.row.payload.len() + 16 > MAX_PACKET {
                if self.parked.insert(id) {
                    tracing::error!(
                        "uplink: message {id} on {} is {} bytes, more than the {MAX_PACKET} an \
                         upstream packet may carry; it stays in the buffer unsent",
                        next.row.topic,
                        next.row.payload.len()
                    );
                    if let Some(h) = &self.health {
                        h.oversize();
                    }
                }
                continue;
            }
            let replay = next.replay;
            let row = next.row;
            let payload = if replay {
                lanes::mark_replay(row.payload)
            } else {
                row.payload
            };
            let qos = row.qos.clamp(1, 2);
            let Handed::Send(publish) =
                self.delivery
                    .send_row(id, &row.topic, Bytes::from(payload), qos, row.retain)
            else {
                continue;
            };
            let pkid = publish.pkid;
            if let Err(e) = wr.queue(&Packet::Publish(publish)) {
                self.delivery.abandon(pkid);
                if self.parked.insert(id) {
                    tracing::error!("uplink: message {id} on {} cannot be sent: {e}", row.topic);
                }
                continue;
            }
            if replay {
                self.replay_window.sent(id);
            }
        }
        if let Some((since, n)) = self.draining {
            let backlog_acked = self
                .delivery
                .oldest_row()
                .is_none_or(|id| id > lanes.backlog_end);
            if lanes.backlog_done() && backlog_acked {
                tracing::info!(
                    "delivered backlog of {n} messages in {:.1}s",
                    since.elapsed().as_secs_f64()
                );
                self.draining = None;
            }
        }
        Ok(wake)
    }
}

//! The one MQTT client to the upstream broker: persistent session, retained will and birth,
//! reconnect with backoff, and the drain loop that sends the outbox in order.
//!
//! The delivery bookkeeping (`delivery`) is a state machine that owns the packet ids; the
//! connection (`link`) only moves bytes, using rumqttc's MQTT 3.1.1 codec. After every CONNACK
//! the open exchanges are resumed when the broker kept the session, and the outbox is sent
//! again from the first unacknowledged row; a row is deleted only on its own PUBACK/PUBCOMP.

mod birth;
pub mod config;
mod delivery;
mod lanes;
mod link;
pub mod tls;
mod window;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::{Connect, LastWill, Packet, PubAck, PubComp, PubRec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use birth::Birth;
pub use config::{Route, UplinkConfig};
use delivery::{Delivery, Item};
use lanes::Lanes;
use link::{Liveness, Reader, Target, Writer};

/// The `status` of the retained gateway status topic's JSON (see `birth`).
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";
/// Connected, but the buffer database cannot be written: readings wait in memory.
pub const DEGRADED: &str = "degraded";

/// How long a clean shutdown waits for the broker to take the `offline` status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// TCP connect plus CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest packet either way; readings are far smaller, forwarded on-site messages may not be.
const MAX_PACKET: usize = 1024 * 1024;
/// QoS 2 rows in flight at once, whatever the window. MQTT 3.1.1 has no way for a broker to say
/// how many it takes; Mosquitto takes 20 (`max_inflight_messages`) and holds the rest back for
/// seconds, which slowed a QoS 2 drain with 100 in flight to about 60 messages a second.
const QOS2_WINDOW: usize = 16;
/// Rows are taken from the outbox only while less than this is waiting for the socket, so a
/// slow link holds back the outbox instead of a growing buffer.
const WRITE_HIGH: usize = 64 * 1024;

/// Delay before reconnect attempt `attempt` (0-based): exponential from `min`, capped at `max`,
/// with "equal jitter" (half fixed, half random) so a fleet that lost the same broker does not
/// come back in lockstep.
pub fn backoff(min: Duration, max: Duration, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let exp = min.saturating_mul(2u32.saturating_pow(attempt.min(30)));
    let capped = exp.min(max).max(min);
    let half = capped / 2;
    half + half.mul_f64(rng.f64())
}

/// The CONNECT every broker of the list gets: persistent session, retained `offline` will.
fn connect_packet(cfg: &UplinkConfig, status_topic: &str) -> Connect {
    let mut c = Connect::new(cfg.client_id.clone());
    c.clean_session = false;
    c.keep_alive = ping_every(cfg).as_secs().min(u16::MAX as u64) as u16;
    c.last_will = Some(LastWill::new(
        status_topic,
        birth::offline(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        c.set_login(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    c
}

/// We ping at half the configured keep-alive and give up when a ping written is not answered
/// within as long again: a silent (half-open) link is found within about 1.5x keepalive, and
/// what was sent into it is still in the outbox.
fn ping_every(cfg: &UplinkConfig) -> Duration {
    (cfg.keepalive / 2).max(Duration::from_secs(1))
}

/// How a connection ended.
enum Ended {
    Shutdown,
    Lost(String),
}

pub struct Uplink {
    cfg: UplinkConfig,
    status_topic: String,
    store: Store,
    connect: Connect,
    /// The primary broker, then the failover ones; `current` indexes the one in use.
    targets: Vec<Target>,
    current: usize,
    delivery: Delivery,
    /// The broker (index in `targets`) the open exchanges of `delivery` were sent to.
    exchanges_at: usize,
    /// What to send next on the current connection; `None` while disconnected.
    lanes: Option<Lanes>,
    replay_window: lanes::ReplayWindow,
    /// Set while a backlog that existed at connect time is being delivered.
    draining: Option<(Instant, u64)>,
    /// Rows too large to send, each reported once; they stay in the outbox.
    parked: HashSet<i64>,
    /// Rows acknowledged whose deletion is not committed yet, with the number of their `ack`:
    /// a new connection reading the outbox must not send them again (for QoS 2 that would be
    /// a second delivery).
    unconfirmed: VecDeque<(u64, i64)>,
    unconfirmed_ids: HashSet<i64>,
    /// Rows that were in flight (resumed) or acknowledged when this connection began: its lanes
    /// may have read them before they completed and yield them after the outbox has forgotten
    /// them, and sending one then would be a second delivery. Bounded by the window and
    /// `unconfirmed`.
    carried: HashSet<i64>,
    acks_sent: u64,
    /// Acknowledged rows not yet handed to the outbox (sent once per read).
    acked: Vec<i64>,
    acks_done: tokio::sync::watch::Receiver<u64>,
    /// Heartbeat and connection state for the watchdog and `/metrics`.
    health: Option<crate::health::UplinkProbe>,
    birth: Birth,
}

impl Uplink {
    /// Fails only if the TLS files (checked at config load) became unusable since.
    pub fn new(
        cfg: UplinkConfig,
        status_topic: String,
        store: Store,
    ) -> Result<Uplink, crate::pem::TlsError> {
        let replay_window = lanes::ReplayWindow::new(cfg.live_max_delay, Instant::now());
        let tls = cfg.tls.as_ref().map(tls::client_config).transpose()?;
        let targets = std::iter::once((cfg.host.clone(), cfg.port))
            .chain(cfg.failover.iter().cloned())
            .map(|(host, port)| Target {
                host,
                port,
                tls: tls.clone(),
            })
            .collect();
        Ok(Uplink {
            connect: connect_packet(&cfg, &status_topic),
            birth: Birth::new(store.first_seq(), ""),
            acks_done: store.acks_committed(),
            cfg,
            status_topic,
            store,
            targets,
            current: 0,
            delivery: Delivery::default(),
            exchanges_at: 0,
            lanes: None,
            replay_window,
            draining: None,
            parked: HashSet::new(),
            unconfirmed: VecDeque::new(),
            unconfirmed_ids: HashSet::new(),
            carried: HashSet::new(),
            acks_sent: 0,
            acked: Vec::new(),
            health: None,
        })
    }

    /// The birth names the config this run was started with (its digest).
    pub fn with_config_digest(mut self, digest: &str) -> Uplink {
        self.birth.config = digest.to_owned();
        self
    }

    pub fn with_health(mut self, probe: Option<crate::health::UplinkProbe>) -> Uplink {
        self.health = probe;
        self
    }

    fn addr(&self) -> String {
        self.targets[self.current % self.targets.len()].addr()
    }

    async fn beat(&self) {
        if let Some(h) = &self.health {
            h.beat().await;
        }
    }

    /// Runs until `shutdown`, then publishes `offline` and disconnects (bounded by a grace period).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut rng = fastrand::Rng::new();
        let mut attempt: u32 = 0;
        loop {
            self.beat().await;
            let target = self.targets[self.current].clone();
            let connect = self.connect.clone();
            let opened = {
                let open = link::open(&target, &connect, MAX_PACKET, CONNECT_TIMEOUT);
                tokio::pin!(open);
                // A broker that drops the SYN takes the whole connect timeout: keep beating.
                let mut beat = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = &mut open => break r,
                        _ = beat.tick() => self.beat().await,
                    }
                }
            };
            let error = match opened {
                Ok((reader, writer, ack)) => {
                    attempt = 0;
                    match self
                        .connected(reader, writer, ack.session_present, &shutdown)
                        .await
                    {
                        Ended::Shutdown => return,
                        Ended::Lost(e) => e,
                    }
                }
                Err(e) => e,
            };
            let delay = backoff(
                self.cfg.reconnect_min,
                self.cfg.reconnect_max,
                attempt,
                &mut rng,
            );
            attempt = attempt.saturating_add(1);
            self.lost(&error, delay).await;
            if !self.wait(delay, &shutdown).await {
                return;
            }
            // After every failure the next broker of the list is tried.
            self.current = (self.current + 1) % self.targets.len();
        }
    }

    /// Sleeps `delay` while beating the heartbeat; false on shutdown.
    async fn wait(&self, delay: Duration, shutdown: &CancellationToken) -> bool {
        let until = Instant::now() + delay;
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => return true,
                _ = beat.tick() => self.beat().await,
            }
        }
    }

    /// One connection, from its CONNACK until it fails or the gateway stops.
    async fn connected(
        &mut self,
        mut rd: Reader,
        mut wr: Writer,
        session_present: bool,
        shutdown: &CancellationToken,
    ) -> Ended {
        if let Some(h) = &self.health {
            h.connected(true);
        }
        self.replay_window.reset(Instant::now());
        let newest = *self.store.available().borrow();
        self.lanes = Some(Lanes::new(newest, self.cfg.replay_rate, Instant::now()));
        let depth = self.store.stats().await.map(|s| s.rows).unwrap_or(0);
        tracing::info!(
            session_present,
            "uplink connected to {}; {} buffered messages to deliver",
            self.addr(),
            depth
        );
        self.draining = (depth > 0).then(|| (Instant::now(), depth));
        // Open exchanges are resumed only with the broker they were sent to: another broker of
        // the list that also kept a session for us knows nothing of them (a PUBREL there would
        // complete a row that the first broker holds undelivered).
        let same_broker = self.exchanges_at == self.current;
        self.exchanges_at = self.current;
        for packet in self.delivery.resume(session_present && same_broker) {
            if let Err(e) = wr.queue(&packet) {
                return Ended::Lost(format!("cannot resend {packet:?}: {e}"));
            }
        }
        self.carried = self.delivery.open_rows().collect();
        self.carried.extend(self.unconfirmed_ids.iter().copied());
        self.publish_status(&mut wr);

        let mut available = self.store.available();
        let mut healthy = self.store.healthy();
        let mut store_alive = true;
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let stall = self.cfg.keepalive.max(Duration::from_secs(2));
        let mut live = Liveness::new(ping_every(&self.cfg), stall, Instant::now());
        let timer = tokio::time::sleep_until(live.deadline(0));
        tokio::pin!(timer);
        loop {
            self.beat().await;
            let newest = *available.borrow_and_update();
            let wake = match self.fill_window(newest, &mut wr).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!("uplink cannot read the buffer: {e}");
                    None
                }
            };
            match live.check(Instant::now(), wr.totals(), wr.pending()) {
                Ok(true) => {
                    if let Err(e) = wr.queue(&Packet::PingReq) {
                        return Ended::Lost(format!("cannot queue a ping: {e}"));
                    }
                    live.ping_queued(wr.totals().0);
                }
                Ok(false) => {}
                Err(e) => return Ended::Lost(e),
            }
            // One timer for both, moved only when its deadline changes: a fresh timer on every
            // turn of a busy loop costs more than the turn itself.
            let due = wake.map_or(live.deadline(wr.pending()), |w| {
                w.min(live.deadline(wr.pending()))
            });
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.goodbye(&mut rd, &mut wr).await;
                    return Ended::Shutdown;
                }
                r = available.changed(), if store_alive => {
                    // The writer is gone (only at shutdown): stop watching, keep serving.
                    store_alive = r.is_ok();
                }
                _ = beat.tick() => {}
                _ = &mut timer => {}
                r = healthy.changed(), if store_alive => {
                    store_alive = r.is_ok();
                    if store_alive {
                        self.publish_status(&mut wr);
                    }
                }
                r = rd.next() => {
                    let first = match r {
                        Ok(p) => p,
                        Err(e) => return Ended::Lost(e),
                    };
                    let mut next = Ok(Some(first));
                    // Whatever else one read brought in, before the next turn.
                    let ended = loop {
                        match next {
                            Ok(Some(p)) => {
                                if let Err(e) = self.incoming(p, &mut wr, &mut live) {
                                    break Some(e);
                                }
                            }
                            Ok(None) => break None,
                            Err(e) => break Some(e),
                        }
                        next = rd.try_next();
                    };
                    self.flush_acks().await;
                    if let Some(e) = ended {
                        return Ended::Lost(e);
                    }
                }
                r = wr.drive(), if wr.busy() => {
                    if let Err(e) = r {
                        return Ended::Lost(format!("I/O: {e}"));
                    }
                }
            }
        }
    }

    /// Hands the rows acknowledged since the last call to the outbox, in one message.
    async fn flush_acks(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.acked);
        if self.store.ack_many(ids).await.is_err() {
            tracing::error!("buffer writer stopped; acknowledged rows stay and will be sent again");
        }
    }

    /// A packet from the broker.
    fn incoming(
        &mut self,
        packet: Packet,
        wr: &mut Writer,
        live: &mut Liveness,
    ) -> Result<(), String> {
        let reply = match &packet {
            Packet::PingResp => {
                live.pong();
                None
            }
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {
                let out = self.delivery.incoming(&packet);
                if let Some(why) = out.ignored {
                    tracing::warn!("uplink: {why}; ignored");
                }
                if let Some(Item::Row(id)) = out.done {
                    self.replay_window.acked(id, Instant::now());
                    self.acks_sent += 1;
                    self.unconfirmed.push_back((self.acks_sent, id));
                    self.unconfirmed_ids.insert(id);
                    self.acked.push(id);
                }
                out.reply
            }
            // Nothing is subscribed; a broker that still delivers to this session gets its
            // acknowledgements so it does not resend forever.
            Packet::Publish(p) => {
                tracing::debug!("uplink: unexpected PUBLISH on {} dropped", p.topic);
                match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(p.pkid))),
                }
            }
            Packet::PubRel(r) => Some(Packet::PubComp(PubComp::new(r.pkid))),
            other => {
                tracing::debug!("uplink: {other:?} ignored");
                None
            }
        };
        if let Some(reply) = reply {
            wr.queue(&reply)
                .map_err(|e| format!("cannot queue {reply:?}: {e}"))?;
        }
        Ok(())
    }

    /// The retained gateway status: `online`, or `degraded` while the buffer cannot be written.
    fn publish_status(&mut self, wr: &mut Writer) {
        let status = if *self.store.healthy().borrow() {
            ONLINE
        } else {
            DEGRADED
        };
        let payload = self.birth.payload(status);
        self.publish_own(wr, status, &payload);
    }

    fn publish_own(&mut self, wr: &mut Writer, status: &str, payload: &str) {
        match self.delivery.send_own(&self.status_topic, payload) {
            Some(p) => {
                if let Err(e) = wr.queue(&Packet::Publish(p)) {
                    tracing::warn!("uplink cannot queue the {status} status: {e}");
                }
            }
            None => tracing::warn!("uplink: no packet id free for the {status} status"),
        }
    }

    async fn lost(&mut self, error: &str, retry_in: Duration) {
        let depth = self.store.stats().await.map(|s| s.rows).unwrap_or(0);
        if self.lanes.is_some() {
            tracing::warn!(
                "uplink to {} lost: {error}; buffering ({depth} messages waiting), retry in {:.1}s",
                self.addr(),
                retry_in.as_secs_f64()
            );
        } else {
            tracing::info!(
                "uplink to {} unavailable: {error}; buffering {depth} messages, retry in {:.1}s",
                self.addr(),
                retry_in.as_secs_f64()
            );
        }
        if let Some(h) = &self.health {
            h.connected(false);
        }
        self.draining = None;
        self.lanes = None;
    }

    /// Publishes `offline`, waits (bounded) for it and the acknowledgements in flight, then
    /// disconnects.
    async fn goodbye(&mut self, rd: &mut Reader, wr: &mut Writer) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        self.publish_own(wr, OFFLINE, &birth::offline());
        let mut live = Liveness::new(SHUTDOWN_GRACE, SHUTDOWN_GRACE, Instant::now());
        while self.delivery.own_pending() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                r = rd.next() => match r {
                    Ok(p) => {
                        let r = self.incoming(p, wr, &mut live);
                        self.flush_acks().await;
                        if r.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                r = wr.drive(), if wr.busy() => {
                    if r.is_err() {
                        return;
                    }
                }
            }
        }
        if wr.queue(&Packet::Disconnect).is_ok() {
            while wr.busy() {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    r = wr.drive() => {
                        if r.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!("uplink disconnected from {}", self.addr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_doubles_caps_and_jitters() {
        let mut rng = fastrand::Rng::with_seed(1);
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 0..40 {
            let d = backoff(min, max, attempt, &mut rng);
            let full = (min * 2u32.pow(attempt.min(6))).min(max);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        let a: Vec<_> = (0..8).map(|_| backoff(min, max, 10, &mut rng)).collect();
        assert!(
            a.windows(2).any(|w| w[0] != w[1]),
            "jitter must vary: {a:?}"
        );
    }
}

//! The one MQTT client to the upstream broker: persistent session, retained will and birth,
//! reconnect with backoff, and the drain loop that sends the outbox in order.
//!
//! rumqttc's own queue of unacknowledged publishes is not trusted (it is lost on restart and
//! dropped when the broker has no session): after every CONNACK the whole outbox is sent again
//! from the first unacknowledged row, and a row is deleted only when its PUBACK/PUBCOMP arrives.

mod lanes;
pub mod tls;
mod tracker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::UplinkConfig;
use crate::store::Store;
use lanes::Lanes;
use tracker::Tracker;

/// Payloads of the retained gateway status topic.
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";
/// Connected, but the buffer database cannot be written: readings wait in memory.
pub const DEGRADED: &str = "degraded";

/// How long a clean shutdown waits for the broker to take the `offline` status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// TCP connect plus CONNACK, in seconds.
const CONNECT_TIMEOUT_S: u64 = 5;
/// Largest packet either way; readings are far smaller, forwarded on-site messages may not be.
const MAX_PACKET: usize = 1024 * 1024;

/// Delay before reconnect attempt `attempt` (0-based): exponential from `min`, capped at `max`,
/// with "equal jitter" (half fixed, half random) so a fleet that lost the same broker does not
/// come back in lockstep.
pub fn backoff(min: Duration, max: Duration, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let exp = min.saturating_mul(2u32.saturating_pow(attempt.min(30)));
    let capped = exp.min(max).max(min);
    let half = capped / 2;
    half + half.mul_f64(rng.f64())
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// What the network task reports to the uplink loop.
enum Report {
    Event(Event),
    /// The connection failed. The loop answers with the delay before the next attempt, once it
    /// has stopped handing rows to the client, so that nothing queued for the dead connection
    /// can be mistaken for a packet of the next one.
    Lost(String, oneshot::Sender<Duration>),
}

/// Owns the rumqttc event loop. Never cancelled mid-poll (rumqttc records a publish as sent
/// before it is written), only aborted at shutdown. After every failure it moves on to the next
/// broker of the list.
async fn network(
    mut events: EventLoop,
    brokers: Vec<MqttOptions>,
    current: Arc<AtomicUsize>,
    tx: mpsc::Sender<Report>,
) {
    loop {
        match events.poll().await {
            Ok(ev) => {
                if tx.send(Report::Event(ev)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let (reply, delay) = oneshot::channel();
                if tx.send(Report::Lost(e.to_string(), reply)).await.is_err() {
                    return;
                }
                let Ok(delay) = delay.await else { return };
                // Requests for the dead connection are dropped: the outbox sends them again.
                events.clean();
                events.pending.clear();
                if brokers.len() > 1 {
                    let next = (current.load(Ordering::Relaxed) + 1) % brokers.len();
                    current.store(next, Ordering::Relaxed);
                    events.mqtt_options = brokers[next].clone();
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Connect options for one broker of the list.
fn options(
    cfg: &UplinkConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
    status_topic: &str,
    host: &str,
    port: u16,
) -> MqttOptions {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
    // rumqttc pings every keep-alive interval and gives up when a ping is still unanswered at
    // the next one; pinging at half the interval finds a silent (half-open) link within
    // 1.5x keepalive, and the messages sent into it are still in the outbox.
    let ping_every = (cfg.keepalive / 2).max(Duration::from_secs(1));
    opts.set_clean_session(false)
        .set_keep_alive(ping_every)
        .set_inflight(cfg.max_inflight)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(status_topic, OFFLINE, QoS::AtLeastOnce, true));
    if let Some(user) = &cfg.username {
        opts.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(tls) = tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    opts
}

pub struct Uplink {
    cfg: UplinkConfig,
    status_topic: String,
    store: Store,
    client: AsyncClient,
    /// The event loop and the options for each broker, until `run` hands them to the network task.
    events: Option<(EventLoop, Vec<MqttOptions>)>,
    /// The primary broker, then the failover ones; `current` indexes the one in use.
    addrs: Vec<(String, u16)>,
    current: Arc<AtomicUsize>,
    tracker: Tracker,
    /// What to send next on the current connection; `None` while disconnected.
    lanes: Option<Lanes>,
    replay_window: lanes::ReplayWindow,
    connected: bool,
    /// Set while a backlog that existed at connect time is being delivered.
    draining: Option<(Instant, u64)>,
    /// Heartbeat and connection state for the watchdog and `/metrics`.
    health: Option<crate::health::UplinkProbe>,
}

impl Uplink {
    /// Fails only if the TLS files (checked at config load) became unusable since.
    pub fn new(cfg: UplinkConfig, status_topic: String, store: Store) -> Result<Uplink, String> {
        let replay_window = lanes::ReplayWindow::new(cfg.live_max_delay, Instant::now());
        let tls = cfg.tls.as_ref().map(tls::client_config).transpose()?;
        let addrs: Vec<(String, u16)> = std::iter::once((cfg.host.clone(), cfg.port))
            .chain(cfg.failover.iter().cloned())
            .collect();
        let brokers: Vec<MqttOptions> = addrs
            .iter()
            .map(|(host, port)| options(&cfg, tls.as_ref(), &status_topic, host, *port))
            .collect();
        let (client, mut events) =
            AsyncClient::new(brokers[0].clone(), cfg.max_inflight as usize + 8);
        // Readings are small and pipelined: without NODELAY, Nagle and delayed ACKs stall the
        // link at a few thousand messages per second.
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(CONNECT_TIMEOUT_S);
        events.set_network_options(net);
        Ok(Uplink {
            cfg,
            status_topic,
            store,
            client,
            events: Some((events, brokers)),
            addrs,
            current: Arc::new(AtomicUsize::new(0)),
            tracker: Tracker::default(),
            lanes: None,
            replay_window,
            connected: false,
            draining: None,
            health: None,
        })
    }

    pub fn with_health(mut self, probe: Option<crate::health::UplinkProbe>) -> Uplink {
        self.health = probe;
        self
    }

    fn addr(&self) -> String {
        let (host, port) = &self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()];
        format!("{host}:{port}")
    }

    /// Runs until `shutdown`, then publishes `offline` and disconnects (bounded by a grace period).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some((events, brokers)) = self.events.take() else {
            return;
        };
        let (tx, mut reports) = mpsc::channel(1024);
        let net = tokio::spawn(network(events, brokers, self.current.clone(), tx));
        let mut rng = fastrand::Rng::new();
        let mut attempt: u32 = 0;
        let mut committed = self.store.committed();
        let mut healthy = self.store.healthy();
        let mut store_alive = true;
        let mut wake: Option<Instant> = None;
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            if let Some(h) = &self.health {
                h.beat().await;
            }
            if self.connected {
                let newest = *committed.borrow_and_update();
                wake = match self.fill_window(newest).await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!("uplink cannot read the buffer: {e}");
                        None
                    }
                };
            }
            let replay_due = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = committed.changed(), if self.connected && store_alive => {
                    // The writer is gone (only at shutdown): stop watching, keep serving.
                    store_alive = r.is_ok();
                }
                _ = replay_due, if self.connected => {}
                _ = beat.tick() => {}
                r = healthy.changed(), if store_alive => {
                    store_alive = r.is_ok();
                    if store_alive && self.connected {
                        self.publish_status();
                    }
                }
                report = reports.recv() => match report {
                    Some(Report::Event(ev)) => {
                        if self.handle(ev).await {
                            attempt = 0;
                        }
                    }
                    Some(Report::Lost(error, reply)) => {
                        let delay = backoff(self.cfg.reconnect_min, self.cfg.reconnect_max, attempt, &mut rng);
                        attempt = attempt.saturating_add(1);
                        self.lost(&error, delay).await;
                        let _ = reply.send(delay);
                    }
                    None => break,
                },
            }
        }
        self.shutdown(&mut reports).await;
        net.abort();
    }

    /// Returns true on CONNACK.
    async fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Incoming(Packet::ConnAck(ack)) => {
                self.connected = true;
                if let Some(h) = &self.health {
                    h.connected(true);
                }
                self.tracker.reset();
                self.replay_window.reset(Instant::now());
                let newest = *self.store.committed().borrow();
                self.lanes = Some(Lanes::new(newest, self.cfg.replay_rate, Instant::now()));
                let depth = self.store.stats().await.map(|s| s.rows).unwrap_or(0);
                tracing::info!(
                    session_present = ack.session_present,
                    "uplink connected to {}; {} buffered messages to deliver",
                    self.addr(),
                    depth
                );
                self.draining = (depth > 0).then(|| (Instant::now(), depth));
                self.publish_status();
                return true;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.tracker.sent(pkid),
            // QoS 2 rows complete with PUBCOMP; our own QoS 1 status publishes with PUBACK.
            Event::Incoming(Packet::PubAck(ack)) => self.acked(ack.pkid).await,
            Event::Incoming(Packet::PubComp(c)) => self.acked(c.pkid).await,
            _ => {}
        }
        false
    }

    /// The retained gateway status: `online`, or `degraded` while the buffer cannot be written.
    fn publish_status(&mut self) {
        let status = if *self.store.healthy().borrow() {
            ONLINE
        } else {
            DEGRADED
        };
        match self
            .client
            .try_publish(&self.status_topic, QoS::AtLeastOnce, true, status)
        {
            Ok(()) => self.tracker.handed_own(),
            Err(e) => tracing::warn!("uplink cannot queue the {status} status: {e}"),
        }
    }

    async fn acked(&mut self, pkid: u16) {
        match self.tracker.acked(pkid) {
            Ok(Some(id)) => {
                self.replay_window.acked(id, Instant::now());
                if self.store.ack(id).await.is_err() {
                    tracing::error!("buffer writer stopped; row {id} stays and will be sent again");
                }
            }
            Ok(None) => {}
            Err(()) => tracing::debug!("uplink: acknowledgement for unknown packet id {pkid}"),
        }
    }

    /// Hands rows to rumqttc while its in-flight window has room, one per acknowledgement, by
    /// lane priority (see `lanes`). A steady stream matters: if the link sat idle until half the
    /// window was acknowledged, a broker with Nagle on (Mosquitto's default) would hold its
    /// PUBACKs for our delayed ACKs and throughput would collapse. Returns when to try again if
    /// only rate-limited replay is waiting.
    async fn fill_window(
        &mut self,
        newest: i64,
    ) -> Result<Option<Instant>, crate::store::StoreError> {
        let window = self.cfg.max_inflight as usize;
        let Some(lanes) = self.lanes.as_mut() else {
            return Ok(None);
        };
        let mut wake = None;
        while self.tracker.outstanding() < window {
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
            let row = next.row;
            let id = row.id;
            let payload = if next.replay {
                lanes::mark_replay(row.payload)
            } else {
                row.payload
            };
            if let Err(e) =
                self.client
                    .try_publish(row.topic, qos(row.qos.clamp(1, 2)), row.retain, payload)
            {
                // Only when the event loop is gone or behind; this connection is about to be
                // replaced, and its successor sends everything again from the outbox.
                tracing::debug!("uplink request queue refused row {id}: {e}");
                return Ok(None);
            }
            self.tracker.handed_row(id);
            if next.replay {
                self.replay_window.sent(id);
            }
        }
        if let Some((since, n)) = self.draining {
            let backlog_acked = self
                .tracker
                .oldest_outstanding()
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

    async fn lost(&mut self, error: &str, retry_in: Duration) {
        let depth = self.store.stats().await.map(|s| s.rows).unwrap_or(0);
        if self.connected {
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
        self.connected = false;
        if let Some(h) = &self.health {
            h.connected(false);
        }
        self.draining = None;
        self.tracker.reset();
        self.lanes = None;
    }

    async fn shutdown(mut self, reports: &mut mpsc::Receiver<Report>) {
        if !self.connected {
            return;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        if self
            .client
            .try_publish(&self.status_topic, QoS::AtLeastOnce, true, OFFLINE)
            .is_ok()
        {
            self.tracker.handed_own();
        }
        // Keep polling so the offline status and any acks in flight complete.
        while self.tracker.own_pending() {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(Report::Event(ev))) => {
                    self.handle(ev).await;
                }
                _ => return,
            }
        }
        if self.client.try_disconnect().is_ok() {
            loop {
                match tokio::time::timeout_at(deadline, reports.recv()).await {
                    Ok(Some(Report::Event(Event::Outgoing(Outgoing::Disconnect)))) => break,
                    Ok(Some(Report::Event(ev))) => {
                        self.handle(ev).await;
                    }
                    _ => break,
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

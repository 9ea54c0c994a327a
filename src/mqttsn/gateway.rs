//! The I/O around [`Engine`]: UDP sockets, bus subscriptions, the clock, the store.
//!
//! One task owns the engine. Datagrams arrive from one receive task per socket; a bad datagram
//! is counted against its source and dropped, and nothing else happens. Bus deliveries for a
//! client's subscription come through a bounded queue that never blocks the bus (a full queue
//! drops and counts), so the gateway can publish onto the bus without a deadlock.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::codec::{decode_frame, Frame, Packet};
use super::config::MqttSnConfig;
use super::mapping::{Mapped, Mapper};
use super::persist::NAMESPACE;
use super::session::{Action, Engine, Limits, Peer, State};
use super::topics::Predefined;
use crate::bus::{Bus, Message};
use crate::normalize::Inlet;
use crate::store::Store;

const TICK: Duration = Duration::from_millis(100);
const DELIVERY_QUEUE: usize = 8192;
/// Sources tracked one by one for malformed datagrams; beyond this they share one counter.
const MAX_SOURCES: usize = 4096;
const LOG_EVERY: Duration = Duration::from_secs(10);

type Delivery = (Arc<str>, Arc<str>, Message);

/// Counts bad datagrams per source, and logs once per burst.
#[derive(Default)]
struct Malformed {
    by_source: BTreeMap<String, u64>,
    total: u64,
    oversized: u64,
    last_log: Option<Instant>,
    since_log: u64,
}

impl Malformed {
    fn count(&mut self, from: SocketAddr, why: &str, now: Instant) {
        self.total += 1;
        let key = from.to_string();
        if self.by_source.len() < MAX_SOURCES || self.by_source.contains_key(&key) {
            *self.by_source.entry(key).or_default() += 1;
        } else {
            *self.by_source.entry("other".into()).or_default() += 1;
        }
        self.since_log += 1;
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(
                "MQTT-SN: dropped a bad datagram from {from}: {why} ({} bad datagrams since the last report)",
                self.since_log
            );
            self.last_log = Some(now);
            self.since_log = 0;
        }
    }
}

pub struct Gateway {
    engine: Engine,
    mapper: Mapper,
    /// Where mapped readings go: the normalize stage of the running pipeline.
    readings: Inlet,
    /// (is IPv4, socket): replies go out of a socket of the peer's family.
    sockets: Vec<(bool, Arc<UdpSocket>)>,
    bus: Bus,
    store: Store,
    subs: HashMap<(Arc<str>, Arc<str>), JoinHandle<()>>,
    deliveries: mpsc::Sender<Delivery>,
    delivery_dropped: Arc<AtomicU64>,
    malformed: Malformed,
    bad_readings: u64,
    max_message_size: usize,
    stats_topic: String,
    last_stats: String,
    buf: Vec<u8>,
}

/// Binds every listen address (errors name the address) and starts serving until `shutdown`.
pub async fn start(
    mq: &MqttSnConfig,
    stats_topic: String,
    (mapper, readings): (Mapper, Inlet),
    bus: Bus,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<(Vec<SocketAddr>, JoinHandle<()>)> {
    let mut sockets = Vec::new();
    let mut addrs = Vec::new();
    for addr in &mq.listen {
        let s = UdpSocket::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("MQTT-SN cannot listen on udp {addr}: {e}"),
            )
        })?;
        let _ = s.set_broadcast(true);
        grow_buffers(&s);
        let local = s.local_addr()?;
        tracing::info!("MQTT-SN gateway listening on udp {local}");
        addrs.push(local);
        sockets.push((local.is_ipv4(), Arc::new(s)));
    }
    let limits = Limits {
        gateway_id: mq.gateway_id,
        max_clients: mq.max_clients,
        max_clients_per_source: mq.max_clients_per_source,
        session_expiry: mq.session_expiry,
        max_rate: mq.max_rate,
        max_buffered: mq.max_buffered,
        max_topics: mq.max_topics,
        t_retry: mq.retry_interval,
        n_retry: mq.max_retries,
    };
    let (dtx, drx) = mpsc::channel(DELIVERY_QUEUE);
    let mut gw = Gateway {
        engine: Engine::new(limits, Predefined::new(&mq.predefined)),
        mapper,
        readings,
        sockets,
        bus,
        store,
        subs: HashMap::new(),
        deliveries: dtx,
        delivery_dropped: Arc::new(AtomicU64::new(0)),
        malformed: Malformed::default(),
        bad_readings: 0,
        max_message_size: mq.max_message_size,
        stats_topic,
        last_stats: String::new(),
        buf: Vec::with_capacity(1500),
    };
    gw.restore().await;
    let (tx, rx) = mpsc::channel(4096);
    for (_, s) in &gw.sockets {
        tokio::spawn(receive(s.clone(), tx.clone(), shutdown.clone()));
    }
    let task = tokio::spawn(gw.run(rx, drx, mq.advertise, mq.stats_interval, shutdown));
    Ok((addrs, task))
}

/// A bigger receive buffer rides out bursts from many nodes at once; best effort.
fn grow_buffers(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    // SAFETY: a valid socket fd and a c_int option value of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn receive(
    sock: Arc<UdpSocket>,
    tx: mpsc::Sender<(SocketAddr, Bytes)>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        match r {
            Ok((n, from)) => {
                if tx
                    .send((from, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // ICMP errors from earlier sends surface here on Linux; they are not fatal.
            Err(e) => tracing::debug!("MQTT-SN receive: {e}"),
        }
    }
}

impl Gateway {
    async fn restore(&mut self) {
        let entries = match self.store.state_load(NAMESPACE).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("MQTT-SN: cannot load saved client sessions: {e}");
                return;
            }
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let n = entries.len();
        let mut expired = 0;
        for (id, bytes) in entries {
            match self.engine.restore(&id, &bytes, now, wall) {
                Ok(None) => {
                    expired += 1;
                    self.store.state_delete(NAMESPACE, &id);
                }
                Ok(Some(filters)) => {
                    // As MQTT's session resume: the node had the retained values already, and
                    // sending them again would evict what is buffered for it.
                    for f in filters {
                        self.subscribe(&id, &f, false);
                    }
                }
                Err(e) => {
                    tracing::warn!("MQTT-SN: saved session of {id} unreadable ({e}); dropped")
                }
            }
        }
        if n > 0 {
            tracing::info!(
                "MQTT-SN: {} client sessions restored, {expired} expired while stopped (mqttsn.session_expiry)",
                n - expired
            );
        }
    }

    async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<(SocketAddr, Bytes)>,
        mut deliveries: mpsc::Receiver<Delivery>,
        advertise: Option<(SocketAddr, Duration)>,
        stats_every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_adv = Instant::now();
        let mut next_stats = Instant::now() + stats_every;
        let mut out = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some((from, data)) = datagrams.recv() => {
                    self.datagram(from, &data, &mut out);
                    // Drain what is already queued before awaiting anything else.
                    while out.len() < 256 {
                        match datagrams.try_recv() {
                            Ok((from, data)) => self.datagram(from, &data, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                Some((client, filter, msg)) = deliveries.recv() => {
                    self.engine.deliver(&client, &filter, &msg, Instant::now(), &mut out);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.engine.tick(now, &mut out);
                    if let Some((addr, every)) = advertise {
                        if now >= next_adv {
                            let secs = every.as_secs().min(u16::MAX as u64) as u16;
                            let p = Packet::Advertise { gw_id: self.engine.limits.gateway_id, duration: secs };
                            out.push(Action::Send(Peer { addr, node: None }, 0, p));
                            next_adv = now + every;
                        }
                    }
                    if now >= next_stats {
                        self.publish_stats().await;
                        next_stats = now + stats_every;
                    }
                }
            }
            self.execute(&mut out).await;
        }
        for (_, t) in self.subs.drain() {
            t.abort();
        }
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8], out: &mut Vec<Action>) {
        let now = Instant::now();
        if data.len() > self.max_message_size {
            self.malformed.oversized += 1;
            self.malformed
                .count(from, "larger than max_message_size", now);
            return;
        }
        match decode_frame(data) {
            Ok(frame) => self.engine.handle(from, frame, now, out),
            Err(e) => self.malformed.count(from, &e.to_string(), now),
        }
    }

    async fn execute(&mut self, out: &mut Vec<Action>) {
        for a in out.drain(..) {
            match a {
                Action::Send(peer, ctrl, packet) => {
                    self.buf.clear();
                    let frame = Frame {
                        forwarded: peer.node.map(|n| (ctrl, n)),
                        packet,
                    };
                    frame.encode(&mut self.buf);
                    let v4 = peer.addr.is_ipv4();
                    if let Some((_, s)) = self.sockets.iter().find(|(f, _)| *f == v4) {
                        if let Err(e) = s.send_to(&self.buf, peer.addr).await {
                            tracing::debug!("MQTT-SN send to {}: {e}", peer.addr);
                        }
                    }
                }
                Action::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                } => match self.mapper.map(topic, payload, qos, retain) {
                    Mapped::Bus(m) => self.bus.publish(m).await,
                    Mapped::Reading(r) => self.readings.send(r).await,
                    Mapped::Bad(why) => {
                        self.bad_readings += 1;
                        if self.bad_readings.is_power_of_two() {
                            tracing::warn!(
                                "MQTT-SN: {why}; skipped ({} so far)",
                                self.bad_readings
                            );
                        }
                    }
                },
                Action::Subscribe { client, filter } => self.subscribe(&client, &filter, true),
                Action::Unsubscribe { client, filter } => {
                    if let Some(t) = self.subs.remove(&(Arc::from(client), Arc::from(filter))) {
                        t.abort();
                    }
                }
                Action::Save(id) => {
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    if let Some(v) = self.engine.snapshot(&id, now, wall) {
                        self.store.state_put(NAMESPACE, &id, v);
                    }
                }
                Action::Forget(id) => self.store.state_delete(NAMESPACE, &id),
            }
        }
    }

    /// A bus subscription for `client`'s `filter`; `retained`: the matching retained values
    /// first (a new SUBSCRIBE), not for a restored one.
    fn subscribe(&mut self, client: &str, filter: &str, retained: bool) {
        let key: (Arc<str>, Arc<str>) = (Arc::from(client), Arc::from(filter));
        if self.subs.contains_key(&key) {
            return;
        }
        let mut sub = match self.bus.subscribe(&[filter.to_owned()], 64, retained) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("MQTT-SN: subscription of {client} to {filter}: {e}");
                return;
            }
        };
        let tx = self.deliveries.clone();
        let dropped = self.delivery_dropped.clone();
        let (c, f) = key.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.recv().await {
                // Never wait here: the bus waits for us, and the gateway may be waiting for the bus.
                if tx.try_send((c.clone(), f.clone(), m)).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        self.subs.insert(key, task);
    }

    /// Publishes the counters, retained, when they changed.
    async fn publish_stats(&mut self) {
        let mut states: BTreeMap<&str, u64> = BTreeMap::new();
        for c in self.engine.clients.values() {
            let s = match c.state {
                State::Active | State::WillTopic | State::WillMsg => "active",
                State::Asleep { .. } | State::Awake => "asleep",
                State::Disconnected => "disconnected",
                State::Lost => "lost",
            };
            *states.entry(s).or_default() += 1;
        }
        let json = serde_json::json!({
            "clients": states,
            "counters": self.engine.counters,
            "malformed": self.malformed.total,
            "oversized": self.malformed.oversized,
            "malformed_by_source": self.malformed.by_source,
            "bad_readings": self.bad_readings,
            "delivery_dropped": self.delivery_dropped.load(Ordering::Relaxed),
        })
        .to_string();
        if json == self.last_stats {
            return;
        }
        self.last_stats = json.clone();
        self.bus
            .publish(Message {
                topic: self.stats_topic.clone(),
                payload: Bytes::from(json),
                qos: 0,
                retain: true,
                props: None,
                origin: None,
            })
            .await;
    }
}

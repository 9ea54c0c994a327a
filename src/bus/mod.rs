//! The local MQTT 3.1.1 and 5.0 broker, and the in-process handle the rest of the gateway
//! publishes and subscribes through.
//!
//! - `codec`: strict 3.1.1 / MQTT 5 packet codec (`check` then `parse`).
//! - `topic`: topic name/filter validation and matching.
//! - `session`: one connection's protocol state machine, no I/O.
//! - `router`: sessions, subscriptions, retained store, fan-out.
//! - `shared`: shared subscription groups (`$share/{group}/{filter}`, also for 3.1.1 clients).
//! - `expiry`: session expiry and delayed wills after a connection ends (one timer task).
//! - `server`: accept loop and the thin I/O loop around `session`, on the broker's own thread.
//! - `listener`, `ws`, `tls`: the TCP, WebSocket (subprotocol `mqtt`) and TLS listeners.
//! - `auth`, `config`: users (PBKDF2-SHA256), anonymous access, ACL; `broker.auth` decoding.
//! - `sys`: `$SYS/broker/...` counters; `client_queue`: per-session queues; `burst`: log rate limit.
//! - `persist`: persistent sessions and retained messages in the store (`persist/records.rs`: their
//!   records); `sent_keys`: which stored message each packet id in flight is.
//! - `ack`: acknowledgements held until the outbox has committed; `cert_name`: a client
//!   certificate's CN.
//!
//! A QoS 1/2 publish from a network client that a durable in-process subscription (the forward
//! rules, [`Bus::subscribe_durable`]) takes is acknowledged once that subscriber has made it
//! durable; the connection goes on reading meanwhile and keeps its acknowledgements in order.
//!
//! QoS 0/1/2 both ways (QoS 2 in is delivered on PUBLISH and never twice; QoS 2 out is resumed
//! with PUBREL or a DUP PUBLISH, in order, when a persistent session reconnects). A malformed
//! topic name or filter closes the connection (MQTT 3.1.1 4.7, 4.8). Started with a store
//! ([`Bus::start_with_store`], as the gateway does), persistent sessions (subscriptions, queued
//! and unacknowledged messages, packet ids) and retained messages also survive a restart of the
//! gateway, graceful or not; see `persist` for what is written when (the retained copies of the
//! gateway's own readings, [`Bus::publish_reading`], only every `buffer.retained_flush` and at
//! a clean stop). Without one, they live in memory only.
//!
//! MQTT 5 (`session/v5.rs`, `server/v5.rs`): reason codes and strings, server DISCONNECT,
//! message properties passed through (with expiry), topic aliases, receive maximum and maximum
//! packet size both ways, subscription options and identifiers (in the router's fan-out).

mod ack;
pub mod auth;
mod burst;
mod cert_name;
pub mod codec;
pub use codec::MessageProps;
pub mod config;
pub use config::BrokerConfig;
mod client_queue;
pub(crate) mod expiry;
mod listener;
mod persist;
mod router;
mod sent_keys;
mod server;
pub mod session;
mod shared;
mod subscription;
mod sys;
pub mod tls;
pub mod topic;
mod ws;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use router::{Router, Stats};

/// Largest remaining length an MQTT packet can declare (4 length bytes).
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// A message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: bytes::Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 properties passed on to subscribers; `None` for 3.1.1 and internal messages.
    pub props: Option<Arc<MessageProps>>,
    /// Class, device and reading fields of the gateway's own messages, for the outbox; `None`
    /// for what clients publish. Never on the wire or on disk.
    pub origin: Option<Arc<crate::reading::Origin>>,
}

/// Which message a full session queue gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueDrop {
    /// A QoS 0 newcomer is dropped; a QoS 1/2 one evicts the oldest queued messages.
    Oldest,
    /// The newcomer is dropped.
    Newest,
}

/// Why the local broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({transport}): {source}")]
    Listen {
        addr: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    /// Checked with the config already; the files changed since.
    #[error("TLS listener: {0}")]
    Tls(#[from] crate::pem::TlsError),
    #[error("cannot start its thread: {0}")]
    Thread(#[from] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid topic filter {0:?}")]
    InvalidFilter(String),
    #[error("shared subscription {0:?} is for network clients; subscribe in-process to the filter after $share/{{group}}/")]
    SharedFilter(String),
}

/// Counters since start; `clients_connected` is the current number of connected MQTT clients.
/// `messages_in` counts messages published into the bus (network PUBLISH, wills, [`Bus::publish`]);
/// `messages_out` counts PUBLISH packets written to clients plus deliveries to in-process
/// subscriptions; `bytes_*` are network bytes; `dropped` counts messages a full or offline client
/// queue had to drop; `denied` counts publishes (and wills) the ACL refused; `refused` counts
/// connections turned away (CONNACK refusals, sockets beyond the limit); `malformed` counts
/// connections closed for a protocol violation, oversized packets included; `expired` counts
/// sessions removed (with their queues) because their expiry interval passed while offline.
#[derive(Debug, Clone, Default)]
pub struct BusStats {
    pub clients_connected: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped: u64,
    pub denied: u64,
    pub refused: u64,
    pub malformed: u64,
    pub expired: u64,
}

struct Inner {
    router: Arc<Router>,
    local_addr: SocketAddr,
    websocket_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    closed: CancellationToken,
}

/// Handle to the running broker; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl Bus {
    /// Binds the TCP listener and the configured WebSocket and TLS ones (port 0 allowed) and
    /// starts serving them, on a thread of the broker's own, until `shutdown` is cancelled. A bind
    /// failure names the address.
    pub async fn start(cfg: &BrokerConfig, shutdown: CancellationToken) -> Result<Bus, StartError> {
        Bus::start_with_store(cfg, None, Duration::ZERO, shutdown).await
    }

    /// [`Bus::start`] with persistent sessions and retained messages kept in `store`: what it
    /// holds from the last run is loaded before the listeners accept anyone. The retained
    /// copies of readings published with [`Bus::publish_reading`] are written at most every
    /// `retained_flush` (`buffer.retained_flush`), and when `shutdown` is cancelled; zero
    /// writes them with every commit, as all other retained messages are.
    pub async fn start_with_store(
        cfg: &BrokerConfig,
        store: Option<crate::store::Store>,
        retained_flush: Duration,
        shutdown: CancellationToken,
    ) -> Result<Bus, StartError> {
        let (tcp, local_addr) = bind(cfg.listen, listener::Transport::Tcp).await?;
        let mut listeners = vec![tcp];
        let mut websocket_addr = None;
        if let Some(addr) = cfg.websocket {
            let (l, local) = bind(addr, listener::Transport::WebSocket).await?;
            websocket_addr = Some(local);
            listeners.push(l);
        }
        let mut tls_addr = None;
        if let Some(tls) = &cfg.tls {
            // Checked by the config already; read again here in case the files changed since.
            let acceptor = tls::acceptor(tls)?;
            let (l, local) = bind(tls.listen, listener::Transport::Tls(acceptor)).await?;
            tls_addr = Some(local);
            listeners.push(l);
        }
        let mut router = Router::configured(cfg);
        let mut due_wills = Vec::new();
        if let Some(store) = store {
            match persist::load(store, || router.new_queue()).await {
                Ok((p, restored)) => {
                    due_wills = router.restore(restored);
                    if !retained_flush.is_zero() {
                        p.coalesce_retained();
                    }
                    router.persist = Some(p);
                }
                Err(e) => tracing::error!(
                    "local broker: cannot load its sessions and retained messages ({e}); \
                     keeping them in memory only for this run"
                ),
            }
        }
        let router = Arc::new(router);
        let closed = CancellationToken::new();
        let limits = server::Limits {
            max_packet_size: cfg.max_packet_size,
            max_connections: cfg.max_connections,
            session: session::SessionLimits {
                max_inflight: u16::try_from(cfg.max_inflight).unwrap_or(u16::MAX),
                receive_maximum: cfg.receive_maximum,
                topic_alias_max: cfg.topic_alias_max,
                max_keepalive: cfg.max_keepalive,
                max_packet_size: u32::try_from(cfg.max_packet_size).unwrap_or(u32::MAX),
            },
        };
        if !cfg.sys_interval.is_zero() {
            tokio::spawn(sys::publish_loop(
                router.clone(),
                cfg.sys_interval,
                shutdown.clone(),
            ));
        }
        tokio::spawn(router::tasks::expire(router.clone(), shutdown.clone()));
        if router.persist.is_some() && !retained_flush.is_zero() {
            tokio::spawn(router::tasks::flush_retained(
                router.clone(),
                retained_flush,
                shutdown.clone(),
            ));
        }
        if !due_wills.is_empty() {
            let router = router.clone();
            tokio::spawn(async move {
                for will in due_wills {
                    router.route(will).await;
                }
            });
        }
        server::start(listeners, router.clone(), limits, shutdown, closed.clone())?;
        Ok(Bus {
            inner: Arc::new(Inner {
                router,
                local_addr,
                websocket_addr,
                tls_addr,
                closed,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Where the WebSocket listener is bound, when `broker.websocket` is set.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.inner.websocket_addr
    }

    /// Where the TLS listener is bound, when `broker.tls` is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.inner.tls_addr
    }

    /// Publish from inside the gateway, as if a client published it. Waits while a matching
    /// in-process subscription's queue is full; for a connected network client's full queue at
    /// most 50 ms, once per stall (then its queue drops).
    /// A topic that is not a valid MQTT topic name, or a message too large for an MQTT packet, is
    /// logged, counted as dropped and not delivered.
    pub async fn publish(&self, mut msg: Message) {
        if self.admit(&mut msg) {
            self.inner.router.route(msg).await;
        }
    }

    /// [`Bus::publish`] of one of the gateway's own readings: when retained, its copy on disk
    /// is coalesced, written at most every `retained_flush` (see [`Bus::start_with_store`])
    /// for the topics that changed, so a sensor's value is not rewritten with every commit.
    /// Only for what the gateway itself produces: a client's publish keeps its durability.
    pub async fn publish_reading(&self, mut msg: Message) {
        if self.admit(&mut msg) {
            self.inner.router.route_own(msg).await;
        }
    }

    /// Hands the pending coalesced retained copies to the store for its next commit, and writes
    /// later ones through: for a clean stop, once the last reading is published and before the
    /// store's last flush. The bus does the same itself when its `shutdown` is cancelled.
    pub fn flush_retained(&self) {
        if let Some(p) = &self.inner.router.persist {
            p.stop_coalescing();
        }
    }

    /// Checks and prepares an in-process publish; false (logged, counted as dropped) when it
    /// cannot go out.
    fn admit(&self, msg: &mut Message) -> bool {
        let router = &self.inner.router;
        if !topic::valid_topic_name(&msg.topic) {
            tracing::warn!(topic = msg.topic, "not publishing to an invalid topic name");
            Stats::add(&router.stats.dropped, 1);
            return false;
        }
        // PUBLISH remaining length: topic field + packet id + payload must fit 4 length bytes.
        if msg.topic.len() + msg.payload.len() + 4 > MAX_REMAINING_LENGTH {
            tracing::warn!(
                topic = msg.topic,
                "not publishing a message too large for MQTT"
            );
            Stats::add(&router.stats.dropped, 1);
            return false;
        }
        msg.qos = msg.qos.min(2);
        MessageProps::start_expiry(&mut msg.props, std::time::Instant::now());
        true
    }

    /// In-process subscription to MQTT topic filters; see [`Subscription`]. Shared
    /// subscriptions (`$share/...`) are refused with [`BusError::SharedFilter`]: an in-process
    /// subscriber is a single consumer and gets every message anyway.
    pub fn subscribe(
        &self,
        filters: &[String],
        capacity: usize,
        retained: bool,
    ) -> Result<Subscription, BusError> {
        inproc_filters(filters)?;
        let router = &self.inner.router;
        let (id, rx, pending) = router.subscribe_inproc(filters.to_vec(), capacity, retained);
        Ok(Subscription {
            id,
            rx,
            pending,
            router: Arc::downgrade(router),
        })
    }

    /// In-process subscription whose consumer makes messages durable (the forward rules feeding
    /// the outbox); see [`DurableSubscription`]. Shared filters are refused as by
    /// [`Bus::subscribe`].
    pub fn subscribe_durable(
        &self,
        filters: &[String],
        capacity: usize,
    ) -> Result<DurableSubscription, BusError> {
        inproc_filters(filters)?;
        let router = &self.inner.router;
        let (id, rx) = router.subscribe_durable(filters.to_vec(), capacity);
        Ok(DurableSubscription {
            id,
            rx,
            router: Arc::downgrade(router),
        })
    }

    pub fn stats(&self) -> BusStats {
        self.inner.router.stats.snapshot()
    }

    /// Resolves when the accept loop and all connection tasks have ended after `shutdown`.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }
}

/// Filters an in-process subscriber may use: valid, and not shared (`$share/...`).
fn inproc_filters(filters: &[String]) -> Result<(), BusError> {
    if let Some(bad) = filters.iter().find(|f| !topic::valid_topic_filter(f)) {
        return Err(BusError::InvalidFilter(bad.clone()));
    }
    if let Some(shared) = filters.iter().find(|f| f.starts_with(topic::SHARE_PREFIX)) {
        return Err(BusError::SharedFilter(shared.clone()));
    }
    Ok(())
}

async fn bind(
    addr: SocketAddr,
    transport: listener::Transport,
) -> Result<(listener::Listener, SocketAddr), StartError> {
    let listen_error = |source| StartError::Listen {
        addr,
        transport: transport.name(),
        source,
    };
    let tcp = TcpListener::bind(addr).await.map_err(listen_error)?;
    let local = tcp.local_addr().map_err(listen_error)?;
    tracing::info!("local broker listening on {local} ({})", transport.name());
    Ok((listener::Listener { tcp, transport }, local))
}

/// An in-process subscription. Lossless: publishers wait for room in its queue (of the
/// `capacity` given to [`Bus::subscribe`], at least 1). Messages arrive with `retain` false,
/// except the retained messages delivered first on request, which have it set. A message
/// matching several of its filters arrives once. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Message>,
    pending: VecDeque<Message>,
    router: Weak<Router>,
}

impl Subscription {
    /// The next message; `None` once the broker has shut down and the queue is drained.
    pub async fn recv(&mut self) -> Option<Message> {
        if let Some(msg) = self.pending.pop_front() {
            return Some(msg);
        }
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(router) = self.router.upgrade() {
            router.unsubscribe_inproc(self.id);
        }
    }
}

/// Fire it once the message it came with is durable; dropping it unfired tells the publisher
/// the message may be lost (its connection is closed unacknowledged, so it sends it again).
pub type Durable = tokio::sync::oneshot::Sender<()>;

/// Like [`Subscription`] (lossless, `retain` false, no retained messages first), for a consumer
/// that makes messages durable: a QoS 1/2 message from a network client comes with a [`Durable`],
/// and that client's PUBACK/PUBREC waits until it fires. Other messages (QoS 0, in-process
/// publishes, wills) come without one and wait for nobody.
pub struct DurableSubscription {
    id: u64,
    rx: mpsc::Receiver<router::Durable>,
    router: Weak<Router>,
}

impl DurableSubscription {
    /// The next message; `None` once the broker has shut down and the queue is drained.
    pub async fn recv(&mut self) -> Option<(Message, Option<Durable>)> {
        self.rx.recv().await
    }
}

impl Drop for DurableSubscription {
    fn drop(&mut self) {
        if let Some(router) = self.router.upgrade() {
            router.unsubscribe_inproc(self.id);
        }
    }
}

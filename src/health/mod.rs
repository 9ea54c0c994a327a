//! Health of the running gateway: systemd readiness and watchdog, Prometheus `/metrics` and
//! `/healthz`, and logging to the journal.
//!
//! - `stages`: heartbeats of the pipeline stages; a stalled stage withholds the watchdog ping
//! - `metrics`: the Prometheus text exposition
//! - `http`: the small HTTP server for `/metrics` and `/healthz`
//! - `notify`: sd_notify messages (READY, WATCHDOG, RELOADING, STOPPING)
//! - `logging`: journal under systemd, stderr otherwise

pub mod config;
mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod stages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

pub use config::HealthConfig;
pub use stages::{Heartbeat, Registry};

use crate::bus::Bus;
use crate::store::Store;

/// Stages that loop at least every second are stalled after this much silence.
pub const STAGE_MAX_SILENCE: Duration = Duration::from_secs(5);
/// An adapter that polls every `interval` beats once per poll; it is stalled after missing two
/// polls and the usual margin.
pub fn adapter_max_silence(interval: Duration) -> Duration {
    interval.saturating_mul(2).saturating_add(STAGE_MAX_SILENCE)
}

/// How often the outbox writer is asked to answer (a ping, which commits nothing).
const OUTBOX_PROBE_EVERY: Duration = Duration::from_secs(1);
/// A scrape waits this long for the buffer's numbers.
const STATS_TIMEOUT: Duration = Duration::from_secs(3);

/// What the uplink reports about itself; see [`UplinkProbe`].
#[derive(Default)]
struct UplinkState {
    connected: AtomicBool,
    connects: AtomicU64,
    /// Rows too large for an upstream packet, left unsent in the buffer.
    oversize: AtomicU64,
    /// Milliseconds since start at the last change of `connected`.
    changed_ms: AtomicU64,
}

/// Handed to the uplink: its heartbeat, and where it records connects and disconnects.
pub struct UplinkProbe {
    state: Arc<UplinkState>,
    start: Instant,
    beat: Heartbeat,
}

impl UplinkProbe {
    pub fn connected(&self, connected: bool) {
        let was = self.state.connected.swap(connected, Ordering::Relaxed);
        if connected {
            self.state.connects.fetch_add(1, Ordering::Relaxed);
        }
        if was != connected {
            let ms = self.start.elapsed().as_millis() as u64;
            self.state.changed_ms.store(ms, Ordering::Relaxed);
        }
    }

    pub fn oversize(&self) {
        self.state.oversize.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn beat(&self) {
        self.beat.beat().await
    }
}

struct Inner {
    start: Instant,
    /// Only the store's health flag: a `Store` handle here would keep its writer thread alive
    /// past shutdown.
    writable: tokio::sync::watch::Receiver<bool>,
    writes: Arc<crate::store::Counters>,
    bus: Bus,
    buffer_dir: PathBuf,
    uplink: Option<Arc<UplinkState>>,
    grace: Duration,
    local_addr: Option<SocketAddr>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

/// Why the health endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl Health {
    /// Binds the HTTP endpoint (when configured) and starts the watchdog (when systemd asks for
    /// one) and the outbox probe. Everything stops with `stop`.
    pub async fn start(
        cfg: Option<&HealthConfig>,
        buffer_dir: &std::path::Path,
        with_uplink: bool,
        store: &Store,
        bus: &Bus,
        stop: CancellationToken,
    ) -> Result<Health, HealthError> {
        let listener =
            match cfg {
                Some(h) => Some(tokio::net::TcpListener::bind(h.listen).await.map_err(
                    |source| HealthError::Listen {
                        addr: h.listen,
                        source,
                    },
                )?),
                None => None,
            };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let health = Health {
            inner: Arc::new(Inner {
                start: Instant::now(),
                writable: store.healthy(),
                writes: store.counters(),
                bus: bus.clone(),
                buffer_dir: buffer_dir.to_path_buf(),
                uplink: with_uplink.then(Arc::default),
                grace: cfg.map_or(config::DEFAULT_UPLINK_GRACE, |h| h.uplink_grace),
                local_addr,
            }),
        };
        if let Some(l) = listener {
            tracing::info!(
                "metrics and health on http://{}/metrics, /healthz",
                local_addr.map_or_else(String::new, |a| a.to_string())
            );
            tokio::spawn(http::serve(l, health.clone(), stop.clone()));
        }
        tokio::spawn(probe_outbox(store.clone(), stop.clone()));
        if let Some(every) = notify::watchdog_interval() {
            tokio::spawn(watchdog(every, stop));
        }
        Ok(health)
    }

    /// The HTTP endpoint's bound address, if configured.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// For the uplink; `None` for a local-only site.
    pub fn uplink_probe(&self) -> Option<UplinkProbe> {
        let state = self.inner.uplink.clone()?;
        Some(UplinkProbe {
            state,
            start: self.inner.start,
            beat: Registry::global().register("uplink", STAGE_MAX_SILENCE),
        })
    }

    /// Tells systemd that startup is done. Call once every listener is bound.
    pub fn ready(&self, status: &str) {
        notify::ready(status);
    }

    pub fn stopping(&self) {
        notify::stopping();
    }

    /// Why the gateway is degraded; empty when healthy.
    pub async fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(u) = &self.inner.uplink {
            if !u.connected.load(Ordering::Relaxed) {
                let since = Duration::from_millis(u.changed_ms.load(Ordering::Relaxed));
                let down = self.inner.start.elapsed().saturating_sub(since);
                if down > self.inner.grace {
                    let what = if u.connects.load(Ordering::Relaxed) == 0 {
                        "never connected"
                    } else {
                        "down"
                    };
                    out.push(format!(
                        "uplink {what} for {}s (grace {}s)",
                        down.as_secs(),
                        self.inner.grace.as_secs()
                    ));
                }
            }
        }
        let writable = *self.inner.writable.borrow();
        if !writable {
            out.push("buffer database cannot be written; readings wait in memory".to_string());
        }
        for s in Registry::global().stalled() {
            out.push(format!(
                "stage {} made no progress for {}s",
                s.stage,
                s.silent.as_secs()
            ));
        }
        out
    }

    /// The Prometheus exposition.
    pub async fn metrics(&self) -> String {
        let dir = self.inner.buffer_dir.clone();
        let stats = tokio::time::timeout(
            STATS_TIMEOUT,
            tokio::task::spawn_blocking(move || crate::store::inspect::stats(&dir)),
        )
        .await;
        let outbox = match stats {
            Ok(Ok(Ok(s))) => Some(s),
            Ok(Ok(Err(e))) => {
                tracing::debug!("metrics: buffer stats: {e}");
                None
            }
            _ => None,
        };
        let now = self.inner.start.elapsed();
        let uplink = self.inner.uplink.as_ref().map(|u| metrics::UplinkSnapshot {
            connected: u.connected.load(Ordering::Relaxed),
            reconnects: u.connects.load(Ordering::Relaxed).saturating_sub(1),
            oversize: u.oversize.load(Ordering::Relaxed),
            state_s: now
                .saturating_sub(Duration::from_millis(u.changed_ms.load(Ordering::Relaxed)))
                .as_secs_f64(),
        });
        let stages = Registry::global()
            .ages()
            .into_iter()
            .map(|(n, s, m)| (n, s.as_secs_f64(), m.as_secs_f64()))
            .collect();
        let healthy = self.problems().await.is_empty();
        let outbox_writable = *self.inner.writable.borrow();
        let snap = metrics::Snapshot {
            uptime_s: now.as_secs_f64(),
            outbox,
            writes: self.inner.writes.snapshot(),
            disk_bytes: crate::store::disk_write_bytes(),
            now_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            outbox_writable,
            uplink,
            bus: self.inner.bus.stats(),
            stages,
            healthy,
        };
        metrics::render(&snap)
    }
}

/// The outbox writer is a thread that sleeps when idle; a ping shows whether it still answers
/// (without committing early: commits stay one per `buffer.commit_interval`).
async fn probe_outbox(store: Store, stop: CancellationToken) {
    let beat = Registry::global().register("outbox", STAGE_MAX_SILENCE);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = store.ping() => if r.is_err() { return },
        }
        beat.beat().await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(OUTBOX_PROBE_EVERY) => {}
        }
    }
}

/// Pings systemd at half its watchdog interval while no stage is stalled.
async fn watchdog(interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    tracing::info!("systemd watchdog: {interval:?}");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stalled = Registry::global().stalled();
        if stalled.is_empty() {
            if withheld {
                tracing::info!("every stage makes progress again; watchdog pings resume");
                notify::status("running");
                withheld = false;
            }
            notify::watchdog();
        } else if !withheld {
            let names: Vec<String> = stalled
                .iter()
                .map(|s| format!("{} (silent {}s)", s.stage, s.silent.as_secs()))
                .collect();
            let text = format!("stalled: {}", names.join(", "));
            tracing::error!("{text}; withholding the watchdog ping so systemd restarts us");
            notify::status(&text);
            withheld = true;
        }
    }
}

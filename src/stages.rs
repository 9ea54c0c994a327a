//! The stages a running gateway starts, stops and, on a reload, replaces: the pipeline (adapters
//! and normalize) and the forward rules; and the bounded wait for any stage's task to end.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::DeviceConfig;
use crate::bus::Bus;
use crate::forward;
use crate::normalize::Inlet;
use crate::reading::Reading;
use crate::site::Config;
use crate::store::Store;
use crate::uplink::UplinkConfig;

/// Starts the adapters of `devices`, sending into the channel until the token is cancelled;
/// [`crate::adapters::start`], or a test's own. Called again on every reload.
pub trait StartAdapters:
    Fn(&[DeviceConfig], &mpsc::Sender<Reading>, &CancellationToken) -> Vec<JoinHandle<()>>
{
}

impl<F> StartAdapters for F where
    F: Fn(&[DeviceConfig], &mpsc::Sender<Reading>, &CancellationToken) -> Vec<JoinHandle<()>>
{
}

/// Readings waiting between the adapters and normalize.
const READINGS_QUEUE: usize = 4096;
/// Messages waiting between the bus and the outbox.
const FORWARD_QUEUE: usize = 4096;
/// Each stage gets this long to stop; the whole shutdown stays within 5 s.
pub const STAGE_GRACE: Duration = Duration::from_millis(1200);

/// The adapters and the normalize stage: started from a config, stopped as one.
pub struct Pipeline {
    stop: CancellationToken,
    adapters: Vec<JoinHandle<()>>,
    normalize: JoinHandle<()>,
    inlet: Inlet,
}

impl Pipeline {
    /// `normalize` runs until every adapter is gone and `inlet` has let go of it; see `app`.
    /// Readings that come through `inlet` (MQTT-SN) go to this pipeline while it runs.
    pub fn start<F>(
        cfg: &Config,
        start_adapters: &impl StartAdapters,
        normalize: impl FnOnce(mpsc::Receiver<Reading>) -> F,
        inlet: &Inlet,
    ) -> Pipeline
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel(READINGS_QUEUE);
        let adapters = start_adapters(&cfg.devices, &tx, &stop);
        inlet.set(Some(tx));
        let normalize = tokio::spawn(normalize(rx));
        Pipeline {
            stop,
            adapters,
            normalize,
            inlet: inlet.clone(),
        }
    }

    /// Stops the adapters; returns once every reading they and the inlet handed over has been
    /// published. Readings sent to the inlet meanwhile wait for the next pipeline.
    pub async fn stop(self) {
        self.stop.cancel();
        for a in self.adapters {
            join("adapter", a).await;
        }
        self.inlet.set(None);
        join("normalize", self.normalize).await;
    }
}

/// The forward rules: the uplink's subscription on the bus, feeding the outbox.
pub struct Forward {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Forward {
    /// `None` for a local-only site (no `uplink`).
    pub fn start(
        uplink: Option<&UplinkConfig>,
        store: &Store,
        bus: &Bus,
    ) -> Result<Option<Forward>, crate::bus::BusError> {
        let Some(up) = uplink else {
            return Ok(None);
        };
        let sub = bus.subscribe_durable(&up.forward_filters(), FORWARD_QUEUE)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(forward::to_outbox_until(
            sub,
            store.clone(),
            up.forward.clone(),
            stop.clone(),
        ));
        Ok(Some(Forward { stop, task }))
    }

    /// Stops after putting what its queue already holds in the outbox.
    pub async fn stop(self) {
        self.stop.cancel();
        join("forward", self.task).await;
    }

    /// Waits for it to end by itself (when the bus has shut down).
    pub async fn finish(self) {
        join("forward", self.task).await;
    }
}

/// Waits up to [`STAGE_GRACE`] for a stage's task; says so if it failed or did not end.
pub async fn join(stage: &str, task: JoinHandle<()>) {
    match tokio::time::timeout(STAGE_GRACE, task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("{stage} task failed: {e}"),
        Err(_) => tracing::warn!("{stage} did not stop within {STAGE_GRACE:?}"),
    }
}

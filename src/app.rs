//! Wires the stages together for `edgegate run` and stops them in order.
//!
//! adapters -> normalize -> bus (local broker) -> forward rules -> outbox -> uplink.
//! Shutdown runs front to back, so that everything an adapter produced before the signal is in
//! the outbox (on disk) before the uplink says `offline` and disconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Message};
use crate::config::expand;
use crate::normalize::liveness::{self, Liveness};
use crate::normalize::Inlet;
use crate::reading::{Origin, Reading};
use crate::reload;
use crate::site::Config;
use crate::stages::{join, Forward, Pipeline, StartAdapters, STAGE_GRACE};
use crate::store::{Caps, Store, StoreError};
use crate::uplink::Uplink;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("local broker: {0}")]
    Bus(#[from] crate::bus::StartError),
    #[error("forward rules: {0}")]
    Forward(#[from] crate::bus::BusError),
    #[error("uplink: {0}")]
    Uplink(#[from] crate::pem::TlsError),
    #[error("health endpoint: {0}")]
    Health(#[from] crate::health::HealthError),
    #[error("MQTT-SN gateway: {0}")]
    MqttSn(#[source] std::io::Error),
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    run_with(cfg, shutdown, crate::adapters::start).await
}

/// [`run`] with the adapters started by `start_adapters` (again after each reload).
pub async fn run_with(
    cfg: Config,
    shutdown: CancellationToken,
    start_adapters: impl StartAdapters,
) -> Result<(), AppError> {
    run_inner(cfg, shutdown, start_adapters, mpsc::channel(1).1).await
}

/// Like [`run`], and applies each config from `reloads` (see [`crate::reload`]).
pub async fn run_with_reloads(
    cfg: Config,
    shutdown: CancellationToken,
    reloads: mpsc::Receiver<Config>,
) -> Result<(), AppError> {
    run_inner(cfg, shutdown, crate::adapters::start, reloads).await
}

async fn run_inner(
    mut cfg: Config,
    shutdown: CancellationToken,
    start_adapters: impl StartAdapters,
    mut reloads: mpsc::Receiver<Config>,
) -> Result<(), AppError> {
    let caps = Caps {
        max_bytes: cfg.buffer.max_bytes,
        max_rows: cfg.buffer.max_rows,
        max_age: cfg.buffer.max_age,
        held: cfg.uplink.as_ref().map_or(0, |u| {
            usize::from(u.max_inflight) + crate::store::UPLINK_READ_AHEAD
        }),
    };
    let store = Store::open(&cfg.buffer.dir, cfg.buffer.commit_interval, caps)?;
    let depth = store.stats().await?.rows;
    tracing::info!(
        "buffer {} open; {depth} messages waiting from an earlier run",
        store.path().display()
    );

    let bus_stop = CancellationToken::new();
    let bus = Bus::start_with_store(
        &cfg.broker,
        Some(store.clone()),
        cfg.buffer.retained_flush,
        bus_stop.clone(),
    )
    .await?;
    let health_stop = CancellationToken::new();
    let health = crate::health::Health::start(
        cfg.health.as_ref(),
        &cfg.buffer.dir,
        cfg.uplink.is_some(),
        &store,
        &bus,
        health_stop.clone(),
    )
    .await?;

    let gateway_status = expand(
        &cfg.topics.status,
        &[("site", &cfg.site), ("gateway", &cfg.gateway)],
    );
    let drops = tokio::spawn(crate::status::publish_drops(
        store.drops(),
        bus.clone(),
        format!("{gateway_status}/drops"),
        bus_stop.clone(),
    ));

    // MQTT-SN nodes' readings join the sensors' in the pipeline's normalize stage.
    let inlet = Inlet::default();
    let mqttsn_stop = CancellationToken::new();
    let mqttsn = match &cfg.mqttsn {
        Some(mq) => Some(
            crate::mqttsn::start(
                mq,
                [("site", &cfg.site), ("gateway", &cfg.gateway)],
                &gateway_status,
                &bus,
                &store,
                inlet.clone(),
                mqttsn_stop.clone(),
            )
            .await
            .map_err(AppError::MqttSn)?,
        ),
        None => None,
    };

    let uplink_stop = CancellationToken::new();
    let mut forward = Forward::start(cfg.uplink.as_ref(), &store, &bus)?;
    let mut uplink = None;
    if let Some(up) = &cfg.uplink {
        let task = Uplink::new(up.clone(), gateway_status.clone(), store.clone())?
            .with_config_digest(&cfg.digest)
            .with_health(health.uplink_probe())
            .run(uplink_stop.clone());
        uplink = Some(tokio::spawn(task));
    } else {
        tracing::info!("no uplink configured: readings stay on the local bus");
    }

    let last_status = LastStatus::default();
    let normalize = |rx: mpsc::Receiver<Reading>, cfg: Config| {
        normalize_to_bus(rx, cfg, store.clone(), bus.clone(), last_status.clone())
    };
    let mut pipeline = Some(Pipeline::start(
        &cfg,
        &start_adapters,
        |rx| normalize(rx, cfg.clone()),
        &inlet,
    ));
    tracing::info!(
        "edgegate running: site {} gateway {}, {} devices",
        cfg.site,
        cfg.gateway,
        cfg.devices.len()
    );

    health.ready(&format!("site {} gateway {}", cfg.site, cfg.gateway));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(new) = reloads.recv() => {
                let stages = reload::Stages {
                    pipeline: &mut pipeline,
                    forward: &mut forward,
                    start_adapters: &start_adapters,
                    normalize: &normalize,
                    inlet: &inlet,
                };
                cfg = reload::apply(&cfg, new, &store, &bus, stages).await;
                health.ready("reloaded");
            }
        }
    }
    health.stopping();
    tracing::info!("stopping: adapters, then flushing the buffer, then the uplink");
    // The MQTT-SN gateway first: it is a source of the pipeline, like the adapters.
    mqttsn_stop.cancel();
    if let Some((_, task)) = mqttsn {
        join("MQTT-SN gateway", task).await;
    }
    // Ends once every reading the adapters and the MQTT-SN gateway produced is on the bus.
    if let Some(p) = pipeline {
        p.stop().await;
    }
    bus_stop.cancel();
    join("drop reports", drops).await;
    let _ = tokio::time::timeout(STAGE_GRACE, bus.closed()).await;
    if let Some(f) = forward {
        f.finish().await;
    }
    // Every reading is on the bus by now: its last retained copies go with this flush.
    bus.flush_retained();
    if let Err(e) = store.flush().await {
        tracing::error!("buffer flush at shutdown failed: {e}");
    }
    uplink_stop.cancel();
    if let Some(u) = uplink {
        join("uplink", u).await;
    }
    health_stop.cancel();
    // Messages the disk never took are lost: the exit says so, not a clean "stopped".
    store.finish().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The status last published on each device status topic. It outlives a pipeline: a reload
/// starts a new one whose liveness knows nothing yet, and must not send what did not change.
#[derive(Clone, Default)]
struct LastStatus(Arc<Mutex<HashMap<String, &'static str>>>);

impl LastStatus {
    /// Records `state` as published on `topic`; false when it was already the last one there.
    fn set(&self, topic: &str, state: &'static str) -> bool {
        let Ok(mut last) = self.0.lock() else {
            return true;
        };
        if last.get(topic) == Some(&state) {
            return false;
        }
        last.insert(topic.to_owned(), state);
        true
    }
}

/// Normalizes readings onto the bus, and publishes each device's `online`/`stale` status when it
/// changes.
async fn normalize_to_bus(
    mut rx: mpsc::Receiver<Reading>,
    cfg: Config,
    store: Store,
    bus: Bus,
    last_status: LastStatus,
) {
    let mut normalizer = cfg.normalizer();
    let devices = cfg
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.adapter.interval()));
    let mut liveness = Liveness::new(devices, Instant::now());
    let status_topic = |device: &str| {
        expand(
            &cfg.topics.device_status,
            &[
                ("site", &cfg.site),
                ("gateway", &cfg.gateway),
                ("device", device),
            ],
        )
    };
    // None when `state` is what the topic already holds (from before a reload).
    let status = |device: &str, state: &'static str| {
        let topic = status_topic(device);
        last_status.set(&topic, state).then(|| Message {
            topic,
            payload: Bytes::from_static(state.as_bytes()),
            qos: 1,
            retain: true,
            props: None,
            origin: Some(Origin::status(device)),
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let beat =
        crate::health::Registry::global().register("normalize", crate::health::STAGE_MAX_SILENCE);
    loop {
        beat.beat().await;
        let r = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = tick.tick() => {
                for device in liveness.check(Instant::now()) {
                    let Some(msg) = status(&device, liveness::STALE) else {
                        continue;
                    };
                    tracing::warn!(device = %device, "no reading for {:?}; marked stale", allowed_silence_of(&cfg, &device));
                    crate::health::metrics::device_error(&device, "stale");
                    bus.publish(msg).await;
                }
                continue;
            }
        };
        crate::health::metrics::reading(&r.device);
        if let Some(msg) = liveness
            .seen(&r.device, Instant::now())
            .and_then(|state| status(&r.device, state))
        {
            bus.publish(msg).await;
        }
        let Some(n) = normalizer.process(&r, || store.next_seq()) else {
            continue;
        };
        bus.publish_reading(n.into_message()).await;
    }
}

fn allowed_silence_of(cfg: &Config, device: &str) -> Duration {
    cfg.devices
        .iter()
        .find(|d| d.id == device)
        .map(|d| liveness::allowed_silence(d.adapter.interval()))
        .unwrap_or_default()
}

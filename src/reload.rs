//! `SIGHUP`: the config file is read again, and the devices (adapters and points), topic
//! templates and forward rules are swapped while the local broker and its clients, the outbox
//! and the uplink keep running. A file with errors is rejected, every error logged as
//! `FILE:LINE:COL: message`, and the running config stays.
//!
//! What cannot change under a running process (the broker's and health endpoint's addresses, the
//! buffer, the uplink connection, the MQTT-SN gateway's own section, the site and gateway ids)
//! keeps its old value until a restart, and the log says so, naming the section. MQTT-SN nodes'
//! readings go through the same normalize stage as the sensors', so new templates reach them too.

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::bus::Bus;
use crate::normalize::Inlet;
use crate::reading::Reading;
use crate::site::Config;
use crate::stages::{Forward, Pipeline, StartAdapters};
use crate::store::Store;

/// Loads the config file again on every SIGHUP; valid configs come out of the channel.
pub fn on_sighup(path: PathBuf) -> mpsc::Receiver<Config> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot watch SIGHUP, reload disabled: {e}");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading {}", path.display());
            let p = path.clone();
            let loaded = tokio::task::spawn_blocking(move || crate::site::load(&p)).await;
            match loaded {
                Ok(Ok(cfg)) => {
                    if tx.send(cfg).await.is_err() {
                        return;
                    }
                }
                Ok(Err(errors)) => {
                    for e in &errors {
                        tracing::error!("{e}");
                    }
                    tracing::error!(
                        "reload rejected: {} problem{} in {}; keeping the running config",
                        errors.len(),
                        if errors.len() == 1 { "" } else { "s" },
                        path.display()
                    );
                }
                Err(e) => tracing::error!("reload failed: {e}"),
            }
        }
    });
    rx
}

/// The config to run after a reload: `new`'s devices, topics and forward rules, everything else
/// from `old`. Also the names of the sections whose changes wait for a restart.
pub fn merge(old: &Config, new: Config) -> (Config, Vec<&'static str>) {
    let mut kept = Vec::new();
    let mut cfg = old.clone();
    if new.site != old.site || new.gateway != old.gateway {
        kept.push("site/gateway");
    }
    if new.broker != old.broker {
        kept.push("broker");
    }
    if new.buffer != old.buffer {
        kept.push("buffer");
    }
    if new.health != old.health {
        kept.push("health");
    }
    if new.mqttsn != old.mqttsn {
        kept.push("mqttsn");
    }
    match (&mut cfg.uplink, new.uplink) {
        (Some(up), Some(new_up)) => {
            let forward = new_up.forward.clone();
            let mut same = new_up;
            same.forward = up.forward.clone();
            if same != *up {
                kept.push("uplink (other than forward)");
            }
            up.forward = forward;
        }
        (None, None) => {}
        _ => kept.push("uplink"),
    }
    cfg.topics = new.topics;
    cfg.devices = new.devices;
    (cfg, kept)
}

/// What a reload replaces, and how to start it again.
pub struct Stages<'a, S, N> {
    pub pipeline: &'a mut Option<Pipeline>,
    pub forward: &'a mut Option<Forward>,
    pub start_adapters: &'a S,
    pub normalize: &'a N,
    pub inlet: &'a Inlet,
}

/// Applies a reloaded config: the new forward rules start before the old ones stop (a message
/// published meanwhile may be buffered twice, never lost), the adapters stop before the new ones
/// start (they may share a port). Returns the config now running.
pub async fn apply<S, N, F>(
    old: &Config,
    new: Config,
    store: &Store,
    bus: &Bus,
    stages: Stages<'_, S, N>,
) -> Config
where
    S: StartAdapters,
    N: Fn(mpsc::Receiver<Reading>, Config) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    crate::health::notify::reloading();
    let (cfg, kept) = merge(old, new);
    for section in kept {
        tracing::warn!("reload: {section} changed; that takes effect after a restart");
    }
    match Forward::start(cfg.uplink.as_ref(), store, bus) {
        Ok(new_forward) => {
            if let Some(f) = std::mem::replace(stages.forward, new_forward) {
                f.stop().await;
            }
        }
        Err(e) => tracing::error!("reload: forward rules: {e}; keeping the old ones"),
    }
    if let Some(p) = stages.pipeline.take() {
        p.stop().await;
    }
    let for_normalize = cfg.clone();
    *stages.pipeline = Some(Pipeline::start(
        &cfg,
        stages.start_adapters,
        |rx| (stages.normalize)(rx, for_normalize),
        stages.inlet,
    ));
    tracing::info!(
        "reloaded: {} devices, forward rules {:?}",
        cfg.devices.len(),
        cfg.uplink
            .as_ref()
            .map(|u| u.forward_filters())
            .unwrap_or_default()
    );
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str, port: u16, forward: &str) -> Config {
        let y = format!(
            "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{port}\nuplink:\n  host: up.example\n  forward: [\"{forward}\"]\n{extra}devices:\n  t:\n    sim:\n      kind: temperature\n      interval: 1s\n"
        );
        crate::site::load_str(&y, "t.yaml").unwrap()
    }

    #[test]
    fn devices_topics_and_forward_change_the_rest_waits_for_a_restart() {
        let old = cfg("", 1883, "farm/#");
        let new = cfg(
            "topics:\n  reading: \"x/{device}/{quantity}\"\n",
            1884,
            "other/#",
        );
        let (merged, kept) = merge(&old, new);
        assert_eq!(kept, vec!["broker"]);
        assert_eq!(merged.broker, old.broker);
        assert_eq!(merged.topics.reading, "x/{device}/{quantity}");
        assert_eq!(
            merged.uplink.unwrap().forward_filters(),
            vec!["other/#".to_string()]
        );
        let (_, kept) = merge(&old, cfg("", 1883, "farm/#"));
        assert!(kept.is_empty());
    }

    #[test]
    fn a_changed_mqttsn_section_is_named_as_waiting_for_a_restart() {
        let old = cfg("mqttsn:\n  listen: 127.0.0.1:1885\n", 1883, "farm/#");
        let moved = cfg("mqttsn:\n  listen: 127.0.0.1:1886\n", 1883, "farm/#");
        let (merged, kept) = merge(&old, moved);
        assert_eq!(kept, vec!["mqttsn"]);
        assert_eq!(
            merged.mqttsn, old.mqttsn,
            "the running gateway stays as it is"
        );
        let (_, kept) = merge(&old, cfg("", 1883, "farm/#"));
        assert_eq!(kept, vec!["mqttsn"], "removed: also only on restart");
        let (_, kept) = merge(&old, old.clone());
        assert!(kept.is_empty());
    }
}

//! Heartbeats of the pipeline's stages, for the systemd watchdog and `/healthz`.
//!
//! Each stage that must keep moving (the adapters' poll loops, normalize, the outbox writer, the
//! uplink loop) holds a [`Heartbeat`] and beats it from inside its loop. A stage that stops beating
//! for longer than its allowed silence is stalled, and while any stage is stalled the watchdog
//! ping is withheld, so systemd restarts a wedged gateway instead of hearing that all is well.
//!
//! Fault injection (for tests and drills, never set in production): `EDGEGATE_FAULT_WEDGE` =
//! `STAGE@DELAY` (e.g. `normalize@2s`) makes that stage's heartbeat block forever once `DELAY`
//! has passed since start, which wedges the stage at that point of its loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The fault-injection variable; see the module docs.
pub const FAULT_WEDGE_ENV: &str = "EDGEGATE_FAULT_WEDGE";

struct Stage {
    name: String,
    max_silence: Duration,
    /// Milliseconds since the registry's start at the last beat.
    last: AtomicU64,
    wedge_at: Option<Instant>,
}

/// Stages currently registered. Dropped heartbeats unregister themselves.
pub struct Registry {
    start: Instant,
    stages: Mutex<Vec<Weak<Stage>>>,
    /// (stage, delay) from `EDGEGATE_FAULT_WEDGE`.
    wedge: Option<(String, Duration)>,
}

/// A stalled stage and how long it has been silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub stage: String,
    pub silent: Duration,
}

impl Registry {
    pub fn new(wedge: Option<(String, Duration)>) -> Registry {
        Registry {
            start: Instant::now(),
            stages: Mutex::new(Vec::new()),
            wedge,
        }
    }

    /// The process-wide registry; reads `EDGEGATE_FAULT_WEDGE` once.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let wedge = std::env::var(FAULT_WEDGE_ENV)
                .ok()
                .and_then(|v| parse_wedge(&v));
            if let Some((stage, after)) = &wedge {
                tracing::warn!("fault injection: stage {stage} will wedge {after:?} after start");
            }
            Registry::new(wedge)
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A stage that counts as stalled after `max_silence` without a beat. Starts beaten.
    pub fn register(&self, name: &str, max_silence: Duration) -> Heartbeat {
        let wedge_at = self
            .wedge
            .as_ref()
            .filter(|(stage, _)| stage == name)
            .map(|(_, after)| self.start + *after);
        let stage = Arc::new(Stage {
            name: name.to_string(),
            max_silence,
            last: AtomicU64::new(self.now_ms()),
            wedge_at,
        });
        if let Ok(mut stages) = self.stages.lock() {
            stages.retain(|s| s.strong_count() > 0);
            stages.push(Arc::downgrade(&stage));
        }
        Heartbeat {
            stage,
            start: self.start,
        }
    }

    /// Stages silent past their allowed silence, by name.
    pub fn stalled(&self) -> Vec<Stall> {
        self.ages()
            .into_iter()
            .filter(|(_, silent, max)| silent > max)
            .map(|(stage, silent, _)| Stall { stage, silent })
            .collect()
    }

    /// (name, time since the last beat, allowed silence) of every live stage, sorted by name.
    pub fn ages(&self) -> Vec<(String, Duration, Duration)> {
        let now = self.now_ms();
        let mut out: Vec<_> = match self.stages.lock() {
            Ok(stages) => stages
                .iter()
                .filter_map(Weak::upgrade)
                .map(|s| {
                    let last = s.last.load(Ordering::Relaxed);
                    let silent = Duration::from_millis(now.saturating_sub(last));
                    (s.name.clone(), silent, s.max_silence)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }
}

/// `STAGE@DELAY`, or just `STAGE` (wedged from the start).
fn parse_wedge(v: &str) -> Option<(String, Duration)> {
    let (stage, delay) = match v.split_once('@') {
        Some((s, d)) => (s, crate::config::parse_duration(d).ok()?),
        None => (v, Duration::ZERO),
    };
    (!stage.is_empty()).then(|| (stage.to_string(), delay))
}

/// A stage's heartbeat; unregisters when dropped (a stage that ended normally is not stalled).
pub struct Heartbeat {
    stage: Arc<Stage>,
    start: Instant,
}

impl Heartbeat {
    fn record(&self) -> bool {
        if self.stage.wedge_at.is_some_and(|t| Instant::now() >= t) {
            return false;
        }
        let ms = self.start.elapsed().as_millis() as u64;
        self.stage.last.store(ms, Ordering::Relaxed);
        true
    }

    /// Records progress. Under fault injection for this stage, never returns once due.
    pub async fn beat(&self) {
        if !self.record() {
            tracing::warn!("fault injection: stage {} wedged", self.stage.name);
            std::future::pending::<()>().await;
        }
    }

    /// [`beat`](Self::beat) for stages that run on a thread of their own.
    pub fn beat_blocking(&self) {
        if !self.record() {
            tracing::warn!("fault injection: stage {} wedged", self.stage.name);
            loop {
                std::thread::park();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_stage_is_stalled_and_a_dropped_one_is_forgotten() {
        let r = Registry::new(None);
        let quick = r.register("quick", Duration::from_millis(30));
        let slow = r.register("slow", Duration::from_secs(60));
        assert!(r.stalled().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        let stalled = r.stalled();
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].stage, "quick");
        assert!(stalled[0].silent >= Duration::from_millis(60));
        quick.beat_blocking();
        assert!(r.stalled().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        drop(quick);
        assert!(r.stalled().is_empty());
        assert_eq!(r.ages().len(), 1);
        drop(slow);
        assert!(r.ages().is_empty());
    }

    #[tokio::test]
    async fn an_injected_wedge_blocks_the_beat_once_due() {
        let r = Registry::new(Some(("normalize".into(), Duration::ZERO)));
        let other = r.register("outbox", Duration::from_secs(1));
        other.beat().await;
        let wedged = r.register("normalize", Duration::from_secs(1));
        let blocked = tokio::time::timeout(Duration::from_millis(100), wedged.beat()).await;
        assert!(blocked.is_err(), "the wedged stage's beat must not return");
    }

    #[test]
    fn wedge_spec_parses() {
        assert_eq!(
            parse_wedge("uplink@2s"),
            Some(("uplink".into(), Duration::from_secs(2)))
        );
        assert_eq!(
            parse_wedge("outbox"),
            Some(("outbox".into(), Duration::ZERO))
        );
        assert_eq!(parse_wedge("x@soon"), None);
        assert_eq!(parse_wedge(""), None);
    }
}

//! The router's background tasks, each one per bus: session expiry with delayed wills, and the
//! flush of the coalesced retained copies.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Router;

/// Longest sleep between sweeps: the wall clock may be stepped (NTP on a board without RTC).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs until `shutdown`: publishes due wills and removes expired sessions. A will pending at
/// shutdown is not published now; a persistent session's store keeps it for the next start.
pub(crate) async fn expire(router: Arc<Router>, shutdown: CancellationToken) {
    loop {
        let changed = router.lifetime_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = SystemTime::now();
        let (wills, next) = router.sweep(now);
        for will in wills {
            tokio::select! {
                _ = Box::pin(router.route(will)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        let sleep = next
            .map(|t| t.duration_since(now).unwrap_or_default().min(MAX_SLEEP))
            .unwrap_or(MAX_SLEEP);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Flushes `router`'s coalesced retained copies every `every` until `shutdown`, then stops
/// coalescing (writing what is pending).
pub(crate) async fn flush_retained(
    router: Arc<Router>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let Some(p) = &router.persist else { return };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                p.flush_retained();
            }
            _ = shutdown.cancelled() => break,
        }
    }
    p.stop_coalescing();
}

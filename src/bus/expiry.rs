//! Session lifetime after the connection ends: session expiry and delayed wills.
//!
//! A session that outlives its connection keeps its expiry interval in seconds and the wall-clock
//! time the connection ended, which is all a restart needs to know. One task sleeps until the
//! next deadline (or until a new one is set) and asks the router to publish due wills and remove
//! expired sessions; there is no task per session.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::router::Router;
use super::Message;

/// Session Expiry Interval meaning "never": a 3.1.1 session without clean session, or v5's
/// 0xFFFFFFFF (MQTT 5 3.1.2.11.2).
pub const NEVER: u32 = u32::MAX;

/// Longest sleep between sweeps: the wall clock may be stepped (NTP on a board without RTC).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// `ended + secs`, or `None` for [`NEVER`].
pub fn deadline(ended: SystemTime, secs: u32) -> Option<SystemTime> {
    (secs != NEVER).then(|| ended + Duration::from_secs(u64::from(secs)))
}

/// A will to publish once the connection ended `delay` seconds ago, unless the client id
/// reconnects first (MQTT 5 3.1.3.2.2); published earlier if the session ends earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedWill {
    pub msg: Message,
    /// Will Delay Interval, seconds (0 in 3.1.1).
    pub delay: u32,
}

/// Runs until `shutdown`: publishes due wills and removes expired sessions. A will pending at
/// shutdown is not published now; a persistent session's store keeps it for the next start.
pub(crate) async fn run(router: Arc<Router>, shutdown: CancellationToken) {
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

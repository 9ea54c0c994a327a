//! Session lifetime after the connection ends: session expiry and delayed wills.
//!
//! A session that outlives its connection keeps its expiry interval in seconds and the wall-clock
//! time the connection ended, which is all a restart needs to know. One task
//! (`router::tasks::expire`) sleeps until the next deadline (or until a new one is set) and asks
//! the router to publish due wills and remove expired sessions; there is no task per session.

use std::time::{Duration, SystemTime};

use super::Message;

/// Session Expiry Interval meaning "never": a 3.1.1 session without clean session, or v5's
/// 0xFFFFFFFF (MQTT 5 3.1.2.11.2).
pub const NEVER: u32 = u32::MAX;

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

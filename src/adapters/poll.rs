//! The schedule shared by adapters that poll devices in turn (an I2C bus, a Modbus line): a
//! device keeps its cadence while it answers and backs off while it fails, so one dead device
//! costs the others nothing but its own attempts.

use std::time::Duration;

use tokio::time::Instant;

/// `base * 2^(failures-1)`, at most `cap`.
pub fn backoff(base: Duration, failures: u32, cap: Duration) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(cap)
}

/// When one device is polled next, and how many polls in a row it has failed.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    max_backoff: Duration,
    due: Instant,
    failures: u32,
}

impl Schedule {
    /// Due at `now`; polled every `interval`, and after failures at most `max_backoff` apart
    /// (or `interval`, when that is longer).
    pub fn new(interval: Duration, max_backoff: Duration, now: Instant) -> Schedule {
        Schedule {
            interval,
            max_backoff: max_backoff.max(interval),
            due: now,
            failures: 0,
        }
    }

    pub fn due(&self) -> Instant {
        self.due
    }

    /// The device answered at `now`: the next poll keeps the cadence unless it fell behind.
    /// Returns the failed polls this answer ended (0 when it was healthy already).
    pub fn answered(&mut self, now: Instant) -> u32 {
        self.due = (self.due + self.interval).max(now + self.interval / 2);
        std::mem::take(&mut self.failures)
    }

    /// The device failed at `now`. Returns the failures in this burst (1: the first, the one
    /// worth logging loudly) and the wait before the next poll.
    pub fn failed(&mut self, now: Instant) -> (u32, Duration) {
        self.failures += 1;
        let retry_in = backoff(self.interval, self.failures, self.max_backoff);
        self.due = now + retry_in;
        (self.failures, retry_in)
    }
}

/// What polling one device produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    Values {
        device: String,
        values: Vec<T>,
        /// Failed polls that ended with this one (0 when it was healthy already).
        recovered_after: u32,
    },
    Failed {
        device: String,
        /// Where (bus or port, address, device), what happened and the likely cause.
        message: String,
        /// 1 for the first failure of a burst: the one worth logging loudly.
        failures: u32,
        retry_in: Duration,
    },
}

/// Logs a failed poll once per burst: a warning for the first, debug lines after.
pub fn log_failure(message: &str, failures: u32, retry_in: Duration) {
    if failures == 1 {
        tracing::warn!("{message}; polling it with backoff, next in {retry_in:?}");
    } else {
        tracing::debug!("{message}; failed poll {failures}, next in {retry_in:?}");
    }
}

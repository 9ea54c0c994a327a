//! One warning per burst for what a flood of bad clients could repeat.

use std::time::Duration;

/// Rate limit for warnings a flood of bad clients could repeat: one line per burst.
pub(crate) struct Burst {
    last: std::sync::Mutex<Option<std::time::Instant>>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Burst {
    pub const EVERY: Duration = Duration::from_secs(10);

    pub const fn new() -> Burst {
        Burst {
            last: std::sync::Mutex::new(None),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, mentioning the `n` like it that were not logged since the last one.
    pub fn check(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_logs_once_then_counts_the_rest() {
        let b = Burst::new();
        assert_eq!(b.check(), Some(0));
        assert_eq!(b.check(), None);
        assert_eq!(b.check(), None);
        *b.last.lock().unwrap() = Some(std::time::Instant::now() - Burst::EVERY);
        assert_eq!(b.check(), Some(2));
        assert_eq!(b.check(), None);
    }
}

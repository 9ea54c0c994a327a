//! Which devices are reporting. A device that has not produced a reading for three of its
//! intervals is `stale`; its next reading makes it `online` again. Pure state, no I/O: the caller
//! publishes the transitions on each device's status topic.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

pub const ONLINE: &str = "online";
pub const STALE: &str = "stale";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unknown,
    Online,
    Stale,
}

struct Device {
    allowed_silence: Duration,
    last_seen: Instant,
    state: State,
}

pub struct Liveness {
    devices: HashMap<String, Device>,
}

/// How long a device with this reading interval may stay silent before it counts as stale.
pub fn allowed_silence(interval: Duration) -> Duration {
    (interval * 3).max(interval + Duration::from_secs(1))
}

impl Liveness {
    /// `devices`: id and reading interval of every configured device; `now` starts their clocks.
    pub fn new<'a>(
        devices: impl IntoIterator<Item = (&'a str, Duration)>,
        now: Instant,
    ) -> Liveness {
        let devices = devices
            .into_iter()
            .map(|(id, interval)| {
                let d = Device {
                    allowed_silence: allowed_silence(interval),
                    last_seen: now,
                    state: State::Unknown,
                };
                (id.to_string(), d)
            })
            .collect();
        Liveness { devices }
    }

    /// A reading arrived. Returns the new status when it changed.
    pub fn seen(&mut self, device: &str, now: Instant) -> Option<&'static str> {
        let d = self.devices.get_mut(device)?;
        d.last_seen = now;
        (d.state != State::Online).then(|| {
            d.state = State::Online;
            ONLINE
        })
    }

    /// Devices that just went stale, in id order.
    pub fn check(&mut self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .devices
            .iter_mut()
            .filter(|(_, d)| {
                d.state != State::Stale && now.duration_since(d.last_seen) > d.allowed_silence
            })
            .map(|(id, d)| {
                d.state = State::Stale;
                id.clone()
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_beyond_three_intervals_is_stale_and_a_reading_recovers() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new([("a", s(1)), ("b", s(10))], t0);
        assert_eq!(l.seen("a", t0), Some(ONLINE));
        assert_eq!(l.seen("a", t0 + s(1)), None, "only changes are reported");
        assert!(l.check(t0 + s(4)).is_empty());
        assert_eq!(l.check(t0 + s(4) + Duration::from_millis(1)), ["a"]);
        assert!(l.check(t0 + s(5)).is_empty(), "stale is reported once");
        assert_eq!(l.seen("a", t0 + s(6)), Some(ONLINE));
        // a is silent again after 6 s; b never reported: stale 30 s after the start.
        assert_eq!(l.check(t0 + s(30)), ["a"]);
        assert_eq!(l.check(t0 + s(31)), ["b"]);
        assert_eq!(l.seen("unknown-device", t0), None);
    }

    #[test]
    fn short_intervals_get_at_least_a_second_of_grace() {
        assert_eq!(
            allowed_silence(Duration::from_millis(50)),
            Duration::from_millis(1050)
        );
        assert_eq!(
            allowed_silence(Duration::from_secs(2)),
            Duration::from_secs(6)
        );
    }
}

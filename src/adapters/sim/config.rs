//! Settings of a simulated sensor.

use std::time::Duration;

use crate::config::decode::MapReader;
use crate::config::units::{ms, secs};

#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// How often a reading is produced.
    pub interval: Duration,
    pub signal: Signal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A daily sine: `mean + amplitude * sin(2*pi*t/period)` plus gaussian-ish noise.
    Temperature {
        mean: f64,
        amplitude: f64,
        noise: f64,
        period: Duration,
    },
    /// A tank that fills from `min` to `max` % in `fill_time`, then drains back in `drain_time`.
    Level {
        min: f64,
        max: f64,
        fill_time: Duration,
        drain_time: Duration,
        noise: f64,
    },
}

impl SimConfig {
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        match self.signal {
            Signal::Temperature { .. } => vec![("temperature", "degC")],
            Signal::Level { .. } => vec![("level", "%")],
        }
    }
}

/// Decodes a device's `sim:` section.
///
/// ```yaml
/// sim:
///   kind: temperature   # or level
///   interval: 1s
///   mean: 4.0           # temperature: mean, amplitude, noise, period
/// ```
pub(crate) fn decode(m: &mut MapReader) -> Option<SimConfig> {
    m.require(&["kind"]);
    let kind = m.one_of("kind", &["temperature", "level"]);
    let interval = m
        .duration("interval", ms(10)..=secs(86_400))
        .unwrap_or(secs(1));
    let Some(kind) = kind else {
        // Without a kind the other keys can't be judged; don't bury the real error.
        m.skip_rest();
        return None;
    };
    let non_negative = 0.0..=f64::INFINITY;
    let signal = if kind == "temperature" {
        Signal::Temperature {
            mean: m.float("mean", f64::MIN..=f64::MAX).unwrap_or(20.0),
            amplitude: m.float("amplitude", non_negative.clone()).unwrap_or(5.0),
            noise: m.float("noise", non_negative).unwrap_or(0.1),
            period: m
                .duration("period", secs(1)..=Duration::MAX)
                .unwrap_or(secs(86_400)),
        }
    } else {
        let (min_given, max_given) = (m.node("min").is_some(), m.node("max").is_some());
        let min = m.float("min", 0.0..=100.0);
        let max = m.float("max", 0.0..=100.0);
        // Check the pair as it will be used, defaults included; blame the key that was written.
        let lo = if min_given { min } else { Some(10.0) };
        let hi = if max_given { max } else { Some(90.0) };
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo >= hi && max_given {
                m.error("max", format!("must be greater than min ({lo}), got {hi}"));
            } else if lo >= hi {
                m.error(
                    "min",
                    format!("must be less than max ({hi}, the default), got {lo}"),
                );
            }
        }
        Signal::Level {
            min: min.unwrap_or(10.0),
            max: max.unwrap_or(90.0),
            fill_time: m
                .duration("fill_time", secs(1)..=Duration::MAX)
                .unwrap_or(secs(600)),
            drain_time: m
                .duration("drain_time", secs(1)..=Duration::MAX)
                .unwrap_or(secs(600)),
            noise: m.float("noise", non_negative).unwrap_or(0.2),
        }
    };
    Some(SimConfig { interval, signal })
}

//! Settings of a simulated sensor.

use std::time::Duration;

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

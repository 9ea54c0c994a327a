//! Turns raw [`Reading`]s into topic + JSON payload: scale/offset, range check -> quality,
//! deadband with heartbeat, topic template, and the per-gateway sequence number.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::bus::Message;
use crate::config::expand;
use crate::reading::{Class, Origin, Quality, Reading};
use bytes::Bytes;

pub mod config;
mod inlet;
pub mod liveness;

pub use config::{PointConfig, Topics};
pub use inlet::Inlet;

use crate::reading::payload::{Alarm, Sample};

/// Without a configured `decimals`, values are rounded to this many places so that scaling
/// artefacts (`0.30000000000000004`) never reach a payload.
const DEFAULT_DECIMALS: u8 = 6;

/// A reading ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub topic: String,
    pub payload: Bytes,
    pub seq: u64,
    /// What the payload was rendered from.
    pub sample: Sample,
    pub device: String,
}

impl Normalized {
    /// The reading as the gateway publishes it on the bus: QoS 1, retained, with its origin
    /// (a reading that crosses a threshold is an alarm).
    pub fn into_message(self) -> Message {
        let class = match self.sample.alarm {
            Some(_) => Class::Alarm,
            None => Class::Telemetry,
        };
        Message {
            topic: self.topic,
            payload: self.payload,
            qos: 1,
            retain: true,
            props: None,
            origin: Some(Arc::new(Origin {
                class,
                device: self.device,
                sample: Some(self.sample),
            })),
        }
    }
}

/// Where a value stands against a point's alarm thresholds.
fn alarm_of(v: f64, cfg: &PointConfig) -> Alarm {
    if cfg.alarm_low.is_some_and(|lo| v < lo) {
        Alarm::Low
    } else if cfg.alarm_high.is_some_and(|hi| v > hi) {
        Alarm::High
    } else {
        Alarm::Clear
    }
}

struct Point {
    cfg: PointConfig,
    topic: String,
    /// Value, quality and time of the last published reading, for deadband and heartbeat.
    last: Option<(f64, Quality, SystemTime)>,
    alarm: Alarm,
}

/// Per-point state lives here; one Normalizer serves the whole gateway.
pub struct Normalizer {
    site: String,
    gateway: String,
    reading_template: String,
    points: HashMap<(String, String), Point>,
}

impl Normalizer {
    /// `points`: (device, quantity, options) for every point that has options.
    pub fn with_points<'a>(
        site: &str,
        gateway: &str,
        reading_template: &str,
        points: impl IntoIterator<Item = (&'a str, &'a str, PointConfig)>,
    ) -> Normalizer {
        let mut n = Normalizer {
            site: site.to_string(),
            gateway: gateway.to_string(),
            reading_template: reading_template.to_string(),
            points: HashMap::new(),
        };
        for (device, quantity, p) in points {
            n.insert_point(device, quantity, p);
        }
        n
    }

    fn insert_point(&mut self, device: &str, quantity: &str, cfg: PointConfig) -> &mut Point {
        let topic = expand(
            &self.reading_template,
            &[
                ("site", &self.site),
                ("gateway", &self.gateway),
                ("device", device),
                ("quantity", quantity),
            ],
        );
        self.points
            .entry((device.to_string(), quantity.to_string()))
            .or_insert(Point {
                cfg,
                topic,
                last: None,
                alarm: Alarm::Clear,
            })
    }

    /// Returns `None` when the deadband holds the reading back or its value is not a number.
    /// `next_seq` is only called for readings that will be published, so seq has no gaps.
    pub fn process(&mut self, r: &Reading, next_seq: impl FnOnce() -> u64) -> Option<Normalized> {
        let key = (r.device.clone(), r.quantity.clone());
        let point = match self.points.contains_key(&key) {
            true => self.points.get_mut(&key)?,
            false => self.insert_point(&r.device, &r.quantity, PointConfig::default()),
        };
        let cfg = &point.cfg;
        let decimals = cfg.decimals.unwrap_or(DEFAULT_DECIMALS);
        let value = round(r.value * cfg.scale + cfg.offset, decimals);
        if !value.is_finite() {
            tracing::warn!(
                device = %r.device,
                quantity = %r.quantity,
                "reading is not a number ({}); skipped",
                r.value
            );
            return None;
        }
        let quality = match r.quality {
            Quality::Good if out_of_range(value, cfg) => Quality::OutOfRange,
            q => q,
        };
        let alarm = alarm_of(value, cfg);
        let crossed = alarm != point.alarm;
        if let Some((last_value, last_quality, last_ts)) = point.last {
            let heartbeat_due = cfg
                .heartbeat
                .is_some_and(|hb| r.ts.duration_since(last_ts).unwrap_or(Duration::ZERO) >= hb);
            let moved = (value - last_value).abs() >= cfg.deadband;
            if !moved && quality == last_quality && !heartbeat_due && !crossed {
                return None;
            }
        }
        point.last = Some((value, quality, r.ts));
        point.alarm = alarm;
        let seq = next_seq();
        let sample = Sample {
            value,
            unit: cfg.unit.clone().or(r.unit.map(str::to_string)),
            ts_ms: Sample::ms_of(r.ts),
            quality,
            seq,
            alarm: crossed.then_some(alarm),
        };
        let payload = sample.to_json()?;
        Some(Normalized {
            topic: point.topic.clone(),
            payload: Bytes::from(payload),
            seq,
            sample,
            device: r.device.clone(),
        })
    }
}

fn out_of_range(v: f64, cfg: &PointConfig) -> bool {
    cfg.valid_min.is_some_and(|min| v < min) || cfg.valid_max.is_some_and(|max| v > max)
}

fn round(v: f64, decimals: u8) -> f64 {
    let f = 10f64.powi(decimals as i32);
    let r = (v * f).round() / f;
    // Very large values would overflow the multiplication; they need no rounding anyway.
    if r.is_finite() {
        r
    } else {
        v
    }
}

#[cfg(test)]
mod tests;

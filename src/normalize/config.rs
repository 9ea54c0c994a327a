//! The normalize stage's config: topic templates (`topics:`) and each point's scaling, range,
//! alarms and deadband (`devices.<id>.points`).

use std::time::Duration;

use crate::config::decode::MapReader;
use crate::config::template::placeholder_problem;
use crate::config::units::secs;

const DEFAULT_READING_TOPIC: &str = "{site}/{gateway}/{device}/{quantity}";
const DEFAULT_STATUS_TOPIC: &str = "{site}/{gateway}/status";
const DEFAULT_DEVICE_STATUS_TOPIC: &str = "{site}/{gateway}/{device}/status";

/// Topic templates. Placeholders: `{site}`, `{gateway}`, and for readings and device status
/// also `{device}`; readings also `{quantity}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub reading: String,
    pub status: String,
    pub device_status: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointConfig {
    /// Overrides the adapter's unit.
    pub unit: Option<String>,
    pub scale: f64,
    pub offset: f64,
    /// Outside `[valid_min, valid_max]` a value is published with quality `out_of_range`.
    pub valid_min: Option<f64>,
    pub valid_max: Option<f64>,
    /// Crossing below `alarm_low` or above `alarm_high` (and coming back) is an alarm: marked in
    /// the payload, sent before queued telemetry and never dropped by the buffer's caps.
    pub alarm_low: Option<f64>,
    pub alarm_high: Option<f64>,
    /// A value that moved less than this since the last published one is held back...
    pub deadband: f64,
    /// ...unless this long has passed since the last publish.
    pub heartbeat: Option<Duration>,
    pub decimals: Option<u8>,
}

impl Default for PointConfig {
    fn default() -> Self {
        PointConfig {
            unit: None,
            scale: 1.0,
            offset: 0.0,
            valid_min: None,
            valid_max: None,
            alarm_low: None,
            alarm_high: None,
            deadband: 0.0,
            heartbeat: None,
            decimals: None,
        }
    }
}

/// `required`: placeholders without which two devices or quantities would share one topic.
fn topic_template(
    m: &mut MapReader,
    key: &str,
    allowed: &[&str],
    required: &[&str],
    default: &str,
) -> Option<String> {
    if m.node(key).is_none() {
        return Some(default.to_string());
    }
    let t = m.string(key)?;
    let problem = if t.is_empty() {
        Some("a topic template must not be empty".to_string())
    } else if t.contains(['+', '#']) {
        Some(format!(
            "`{t}` contains a wildcard (`+` or `#`); a topic to publish to must not"
        ))
    } else if t.contains('\0') {
        Some("a topic must not contain NUL".to_string())
    } else if let Some(p) = placeholder_problem(&t, allowed) {
        Some(p)
    } else {
        let missing: Vec<String> = required
            .iter()
            .filter(|r| !t.contains(&format!("{{{r}}}")))
            .map(|r| format!("{{{r}}}"))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "`{t}` lacks {}: without it different sensors would publish to the same topic",
                missing.join(" and ")
            )
        })
    };
    match problem {
        None => Some(t),
        Some(p) => {
            m.error(key, p);
            None
        }
    }
}

pub fn decode_topics(m: &mut MapReader) -> Option<Topics> {
    let reading = topic_template(
        m,
        "reading",
        &["site", "gateway", "device", "quantity"],
        &["device", "quantity"],
        DEFAULT_READING_TOPIC,
    );
    let status = topic_template(m, "status", &["site", "gateway"], &[], DEFAULT_STATUS_TOPIC);
    let device_status = topic_template(
        m,
        "device_status",
        &["site", "gateway", "device"],
        &["device"],
        DEFAULT_DEVICE_STATUS_TOPIC,
    );
    Some(Topics {
        reading: reading?,
        status: status?,
        device_status: device_status?,
    })
}

pub fn decode_point(m: &mut MapReader) -> Option<PointConfig> {
    let any = f64::MIN..=f64::MAX;
    let unit = m.string("unit");
    let unit_ok = unit.is_some() || m.node("unit").is_none();
    let scale = m.float("scale", any.clone());
    if scale == Some(0.0) {
        m.error("scale", "must not be 0");
    }
    let offset = m.float("offset", any.clone());
    let valid_min = m.float("valid_min", any.clone());
    let valid_max = m.float("valid_max", any);
    if let (Some(lo), Some(hi)) = (valid_min, valid_max) {
        if lo >= hi {
            m.error(
                "valid_max",
                format!("must be greater than valid_min ({lo}), got {hi}"),
            );
        }
    }
    let alarm_low = m.float("alarm_low", f64::MIN..=f64::MAX);
    let alarm_high = m.float("alarm_high", f64::MIN..=f64::MAX);
    if let (Some(lo), Some(hi)) = (alarm_low, alarm_high) {
        if lo >= hi {
            m.error(
                "alarm_high",
                format!("must be greater than alarm_low ({lo}), got {hi}"),
            );
        }
    }
    let deadband = m.float("deadband", 0.0..=f64::INFINITY);
    let heartbeat = m.duration("heartbeat", secs(1)..=Duration::MAX);
    let decimals = m.int("decimals", 0..=9u8);
    let ok = unit_ok
        && scale != Some(0.0)
        && valid_min.zip(valid_max).is_none_or(|(lo, hi)| lo < hi)
        && alarm_low.zip(alarm_high).is_none_or(|(lo, hi)| lo < hi);
    ok.then_some(())?;
    let d = PointConfig::default();
    Some(PointConfig {
        unit,
        scale: scale.unwrap_or(d.scale),
        offset: offset.unwrap_or(d.offset),
        valid_min,
        valid_max,
        alarm_low,
        alarm_high,
        deadband: deadband.unwrap_or(d.deadband),
        heartbeat,
        decimals,
    })
}

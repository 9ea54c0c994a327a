//! Where a client's PUBLISH goes on the bus: straight through (optionally under a prefix), or as
//! a reading normalized like any other sensor's.

use std::time::SystemTime;

use bytes::Bytes;

use super::config::{MapTo, Mapping};
use crate::bus::{topic, Message};
use crate::reading::{Quality, Reading};

enum Target {
    Bus(String),
    /// The unit, leaked once per mapping at start: `Reading::unit` is `&'static str`.
    Readings(Option<&'static str>),
}

pub struct Mapper {
    rules: Vec<(String, Target)>,
}

#[derive(Debug, PartialEq)]
pub enum Mapped {
    Bus(Message),
    Reading(Reading),
    /// A readings topic whose payload is not a number: the reason.
    Bad(String),
}

/// The number in a payload: `21.5`, or JSON `21.5` / `{"value": 21.5}`.
pub fn parse_value(payload: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if let Ok(v) = text.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::Object(m) => m.get("value")?.as_f64(),
        v => v.as_f64(),
    }
}

/// Device (first `+` level) and quantity (second `+` level, or the last level) of `topic`.
pub fn device_quantity(filter: &str, topic: &str) -> Option<(String, String)> {
    let mut plus = filter
        .split('/')
        .zip(topic.split('/'))
        .filter(|(f, _)| *f == "+")
        .map(|(_, t)| t);
    let device = plus.next()?;
    let quantity = plus.next().or_else(|| topic.rsplit('/').next())?;
    if device.is_empty() || quantity.is_empty() {
        return None;
    }
    Some((device.to_owned(), quantity.to_owned()))
}

impl Mapper {
    /// `vars` expand `{site}` and `{gateway}` in prefixes.
    pub fn new(mappings: &[Mapping], vars: &[(&str, &str)]) -> Mapper {
        let rules = mappings
            .iter()
            .map(|m| {
                let t = match &m.to {
                    MapTo::Bus { prefix } => Target::Bus(crate::config::expand(prefix, vars)),
                    MapTo::Readings { unit } => Target::Readings(
                        unit.as_ref()
                            .map(|u| &*Box::leak(u.clone().into_boxed_str())),
                    ),
                };
                (m.filter.clone(), t)
            })
            .collect();
        Mapper { rules }
    }

    pub fn map(&self, topic: String, payload: Bytes, qos: u8, retain: bool) -> Mapped {
        let rule = self.rules.iter().find(|(f, _)| topic::matches(f, &topic));
        match rule {
            None => Mapped::Bus(Message {
                topic,
                payload,
                qos,
                retain,
                props: None,
                origin: None,
            }),
            Some((_, Target::Bus(prefix))) => Mapped::Bus(Message {
                topic: if prefix.is_empty() {
                    topic
                } else {
                    format!("{prefix}{topic}")
                },
                payload,
                qos,
                retain,
                props: None,
                origin: None,
            }),
            Some((filter, Target::Readings(unit))) => {
                let Some((device, quantity)) = device_quantity(filter, &topic) else {
                    return Mapped::Bad(format!("no device and quantity in topic {topic}"));
                };
                let Some(value) = parse_value(&payload) else {
                    return Mapped::Bad(format!(
                        "payload on {topic} is not a number or {{\"value\": number}}"
                    ));
                };
                Mapped::Reading(Reading {
                    device,
                    quantity,
                    value,
                    unit: *unit,
                    ts: SystemTime::now(),
                    quality: Quality::Good,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_levels() {
        assert_eq!(parse_value(b" 21.5\n"), Some(21.5));
        assert_eq!(parse_value(b"{\"value\": -3}"), Some(-3.0));
        assert_eq!(parse_value(b"7e1"), Some(70.0));
        assert_eq!(parse_value(b"NaN"), None);
        assert_eq!(parse_value(b"{\"v\": 1}"), None);
        assert_eq!(parse_value(b"warm"), None);
        assert_eq!(
            device_quantity("radio/+/+", "radio/node7/temperature"),
            Some(("node7".into(), "temperature".into()))
        );
        assert_eq!(
            device_quantity("radio/+/#", "radio/node7/env/humidity"),
            Some(("node7".into(), "humidity".into()))
        );
        assert_eq!(device_quantity("radio/#", "radio/x"), None);
    }
}

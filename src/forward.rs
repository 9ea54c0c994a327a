//! The forward rules: what the bus delivers to the uplink's subscription is kept in the outbox
//! until upstream acknowledges it. Here each message gets its class (device and gateway status
//! changes are alarms, which the caps never drop) and the device it came from (for counting drops).

use crate::bus::topic::matches;
use crate::bus::DurableSubscription;
use crate::config::{expand, Config, Route};
use crate::store::{Class, Outgoing, Store};
use tokio_util::sync::CancellationToken;

const ALARM_KEY: &[u8] = b"\"alarm\":\"";

/// One topic template, split into levels, with `{site}` and `{gateway}` already filled in.
struct Template(Vec<String>);

impl Template {
    fn new(template: &str, cfg: &Config) -> Template {
        let t = expand(template, &[("site", &cfg.site), ("gateway", &cfg.gateway)]);
        Template(t.split('/').map(str::to_string).collect())
    }

    /// The `{device}` level of `topic` if the topic fits the template.
    fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let levels: Vec<&str> = topic.split('/').collect();
        if levels.len() != self.0.len() {
            return None;
        }
        let mut device = None;
        for (t, l) in self.0.iter().zip(levels) {
            match t.as_str() {
                "{device}" => device = Some(l),
                "{quantity}" => {}
                // Placeholders mixed with text inside a level are not taken apart.
                t if t.contains('{') => {}
                t if t != l => return None,
                _ => {}
            }
        }
        device
    }
}

pub struct Classifier {
    reading: Template,
    device_status: Template,
    gateway_status: String,
}

impl Classifier {
    pub fn new(cfg: &Config) -> Classifier {
        Classifier {
            reading: Template::new(&cfg.topics.reading, cfg),
            device_status: Template::new(&cfg.topics.device_status, cfg),
            gateway_status: expand(
                &cfg.topics.status,
                &[("site", &cfg.site), ("gateway", &cfg.gateway)],
            ),
        }
    }

    pub fn classify(&self, topic: &str) -> (Class, String) {
        // The gateway's status and what it reports under it (buffer drops) are alarms.
        let under_status = topic
            .strip_prefix(self.gateway_status.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if under_status {
            return (Class::Alarm, String::new());
        }
        if let Some(d) = self.device_status.device_of(topic) {
            return (Class::Alarm, d.to_string());
        }
        let device = self.reading.device_of(topic).unwrap_or_default();
        (Class::Telemetry, device.to_string())
    }

    /// Like `classify`, and a reading whose payload marks a threshold crossing is an alarm.
    pub fn classify_message(&self, topic: &str, payload: &[u8]) -> (Class, String) {
        let (class, device) = self.classify(topic);
        // Our own payloads (normalize) spell the marker exactly so; see `normalize::Payload`.
        let crossing = |p: &[u8]| p.windows(ALARM_KEY.len()).any(|w| w == ALARM_KEY);
        if class == Class::Telemetry && !device.is_empty() && crossing(payload) {
            return (Class::Alarm, device);
        }
        (class, device)
    }
}

/// The QoS a message on `topic` goes upstream at: that of the first route matching it.
pub fn route_qos(routes: &[Route], topic: &str) -> u8 {
    routes
        .iter()
        .find(|r| matches(&r.filter, topic))
        .map_or(1, |r| r.qos)
}

/// Runs until the bus shuts down and the subscription is drained. Upstream gets a plain stream
/// (retain off, each route's QoS); the local bus keeps the last values.
pub async fn to_outbox(
    sub: DurableSubscription,
    classifier: Classifier,
    store: Store,
    routes: Vec<Route>,
) {
    to_outbox_until(sub, classifier, store, routes, CancellationToken::new()).await
}

/// Like [`to_outbox`], and also ends on `stop`, after what the subscription's queue already
/// holds is in the outbox (a config reload replaces the forward rules this way).
pub async fn to_outbox_until(
    mut sub: DurableSubscription,
    classifier: Classifier,
    store: Store,
    routes: Vec<Route>,
    stop: CancellationToken,
) {
    loop {
        let m = tokio::select! {
            m = sub.recv() => m,
            _ = stop.cancelled() => {
                // Queued messages are ready at once; the first wait means the queue is empty.
                match tokio::time::timeout(std::time::Duration::ZERO, sub.recv()).await {
                    Ok(m) => m,
                    Err(_) => return,
                }
            }
        };
        // `durable` fires with the commit: the publishing client's acknowledgement waits for it.
        let Some((m, durable)) = m else { return };
        let (class, device) = classifier.classify_message(&m.topic, &m.payload);
        let out = Outgoing {
            qos: route_qos(&routes, &m.topic),
            topic: m.topic,
            payload: m.payload,
            retain: false,
            class,
            device,
        };
        if store.enqueue_then(out, durable).await.is_err() {
            tracing::error!("buffer writer stopped; forwarding ends");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(reading: &str) -> Config {
        let yaml = format!("site: farm\ngateway: gw1\ntopics:\n  reading: \"{reading}\"\n");
        crate::config::load_str(&yaml, "t.yaml").unwrap()
    }

    #[test]
    fn readings_are_telemetry_of_their_device_and_status_changes_are_alarms() {
        let c = Classifier::new(&cfg("{site}/{gateway}/{device}/{quantity}"));
        let t = |topic: &str| c.classify(topic);
        assert_eq!(
            t("farm/gw1/tank-1/level"),
            (Class::Telemetry, "tank-1".into())
        );
        assert_eq!(t("farm/gw1/tank-1/status"), (Class::Alarm, "tank-1".into()));
        assert_eq!(t("farm/gw1/status"), (Class::Alarm, "".into()));
        assert_eq!(t("farm/gw1/status/drops"), (Class::Alarm, "".into()));
        assert_eq!(t("farm/gw1/a/b/c"), (Class::Telemetry, "".into()));
        assert_eq!(t("other/gw1/tank-1/level"), (Class::Telemetry, "".into()));
    }

    #[test]
    fn threshold_crossings_are_alarms() {
        let c = Classifier::new(&cfg("{site}/{gateway}/{device}/{quantity}"));
        let p = br#"{"value":9.1,"unit":"degC","ts":"t","quality":"good","seq":5,"alarm":"high"}"#;
        assert_eq!(
            c.classify_message("farm/gw1/cold/temperature", p),
            (Class::Alarm, "cold".into())
        );
        let plain = br#"{"value":9.1,"seq":6}"#;
        assert_eq!(
            c.classify_message("farm/gw1/cold/temperature", plain),
            (Class::Telemetry, "cold".into())
        );
    }

    #[test]
    fn the_first_matching_route_decides_the_qos() {
        let yaml = "site: farm\ngateway: gw1\nuplink:\n  host: h\n  qos: 1\n  forward:\n    - {filter: \"{site}/{gateway}/+/status\", qos: 2}\n    - {filter: \"{site}/{gateway}/cold/#\", qos: 2}\n    - \"{site}/#\"\n";
        let cfg = crate::config::load_str(yaml, "t.yaml").unwrap();
        let routes = cfg.uplink.unwrap().forward;
        assert_eq!(route_qos(&routes, "farm/gw1/tank/status"), 2);
        assert_eq!(route_qos(&routes, "farm/gw1/cold/temperature"), 2);
        assert_eq!(route_qos(&routes, "farm/gw1/tank/level"), 1);
    }

    #[test]
    fn custom_templates_are_followed() {
        let c = Classifier::new(&cfg("plants/{site}/{device}/{gateway}/{quantity}"));
        assert_eq!(
            c.classify("plants/farm/pump-3/gw1/temperature"),
            (Class::Telemetry, "pump-3".into())
        );
    }
}

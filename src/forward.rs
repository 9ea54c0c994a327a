//! The forward rules: what the bus delivers to the uplink's subscription is kept in the outbox
//! until upstream acknowledges it, with the class, device and reading fields its origin carries
//! (what on-site clients publish is telemetry of no device).

use crate::bus::topic::matches;
use crate::bus::{DurableSubscription, Message};
use crate::store::{Class, Outgoing, Store};
use crate::uplink::Route;
use tokio_util::sync::CancellationToken;

/// The QoS a message on `topic` goes upstream at: that of the first route matching it.
pub fn route_qos(routes: &[Route], topic: &str) -> u8 {
    routes
        .iter()
        .find(|r| matches(&r.filter, topic))
        .map_or(1, |r| r.qos)
}

/// Runs until the bus shuts down and the subscription is drained. Upstream gets a plain stream
/// (retain off, each route's QoS); the local bus keeps the last values.
pub async fn to_outbox(sub: DurableSubscription, store: Store, routes: Vec<Route>) {
    to_outbox_until(sub, store, routes, CancellationToken::new()).await
}

/// Like [`to_outbox`], and also ends on `stop`, after what the subscription's queue already
/// holds is in the outbox (a config reload replaces the forward rules this way).
pub async fn to_outbox_until(
    mut sub: DurableSubscription,
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
        let out = outgoing(m, &routes);
        if store.enqueue_then(out, durable).await.is_err() {
            tracing::error!("buffer writer stopped; forwarding ends");
            return;
        }
    }
}

/// What the outbox keeps of `m`: upstream gets a plain stream (retain off, its route's QoS).
fn outgoing(m: Message, routes: &[Route]) -> Outgoing {
    let qos = route_qos(routes, &m.topic);
    let (class, device, sample) = match m.origin {
        Some(o) => (o.class, o.device.clone(), o.sample.clone()),
        None => (Class::Telemetry, String::new(), None),
    };
    Outgoing {
        qos,
        topic: m.topic,
        payload: m.payload,
        retain: false,
        class,
        device,
        sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Origin, Quality, Reading};

    fn routes() -> Vec<Route> {
        let yaml = "site: farm\ngateway: gw1\nuplink:\n  host: h\n  qos: 1\n  forward:\n    - {filter: \"{site}/{gateway}/+/status\", qos: 2}\n    - {filter: \"{site}/{gateway}/cold/#\", qos: 2}\n    - \"{site}/#\"\n";
        let cfg = crate::site::load_str(yaml, "t.yaml").unwrap();
        cfg.uplink.unwrap().forward
    }

    #[test]
    fn the_first_matching_route_decides_the_qos() {
        let routes = routes();
        assert_eq!(route_qos(&routes, "farm/gw1/tank/status"), 2);
        assert_eq!(route_qos(&routes, "farm/gw1/cold/temperature"), 2);
        assert_eq!(route_qos(&routes, "farm/gw1/tank/level"), 1);
    }

    fn reading(value: f64) -> Message {
        let yaml = "site: farm\ngateway: gw1\ndevices:\n  cold:\n    sim: {kind: temperature, interval: 1s}\n    points:\n      temperature: {alarm_high: 8}\n";
        let cfg = crate::site::load_str(yaml, "t.yaml").unwrap();
        let mut n = cfg.normalizer();
        let r = Reading {
            device: "cold".into(),
            quantity: "temperature".into(),
            value,
            unit: Some("degC"),
            ts: std::time::SystemTime::now(),
            quality: Quality::Good,
        };
        n.process(&r, || 7).unwrap().into_message()
    }

    #[test]
    fn class_device_and_fields_come_from_the_origin_not_the_bytes() {
        let routes = routes();
        // A threshold crossing is an alarm of its device, and keeps its fields.
        let out = outgoing(reading(9.1), &routes);
        assert_eq!(
            (out.class, out.device.as_str(), out.qos),
            (Class::Alarm, "cold", 2)
        );
        let s = out.sample.expect("a reading keeps its fields");
        assert_eq!((s.value, s.seq), (9.1, 7));
        assert!(!out.retain);
        let plain = outgoing(reading(4.0), &routes);
        assert_eq!(plain.class, Class::Telemetry);
        // A client's message that looks like an alarm reading is telemetry of no device.
        let mut fake = reading(9.1);
        fake.origin = None;
        let out = outgoing(fake, &routes);
        assert_eq!((out.class, out.device.as_str()), (Class::Telemetry, ""));
        assert!(out.sample.is_none());
        // A device status change is an alarm.
        let mut status = reading(1.0);
        status.origin = Some(Origin::status("tank-1"));
        let out = outgoing(status, &routes);
        assert_eq!((out.class, out.device.as_str()), (Class::Alarm, "tank-1"));
    }
}

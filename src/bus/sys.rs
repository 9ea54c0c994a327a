//! `$SYS/broker/...`: the broker's counters, published retained every `sys_interval`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::router::Router;
use super::Message;

pub(crate) async fn publish_loop(
    router: Arc<Router>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let version = format!("edgegate {}", env!("CARGO_PKG_VERSION"));
    publish(&router, "$SYS/broker/version", version).await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = router.stats.snapshot();
        let uptime = format!("{} seconds", started.elapsed().as_secs());
        let values = [
            ("$SYS/broker/uptime", uptime),
            (
                "$SYS/broker/clients/connected",
                s.clients_connected.to_string(),
            ),
            ("$SYS/broker/messages/received", s.messages_in.to_string()),
            ("$SYS/broker/messages/sent", s.messages_out.to_string()),
            ("$SYS/broker/messages/dropped", s.dropped.to_string()),
            ("$SYS/broker/messages/denied", s.denied.to_string()),
            ("$SYS/broker/sessions/expired", s.expired.to_string()),
            ("$SYS/broker/bytes/received", s.bytes_in.to_string()),
            ("$SYS/broker/bytes/sent", s.bytes_out.to_string()),
        ];
        for (topic, value) in values {
            publish(&router, topic, value).await;
        }
    }
}

/// Retained QoS 0, not counted as a received message (it was not received from anyone).
async fn publish(router: &Router, topic: &str, value: String) {
    let msg = Message {
        topic: topic.to_owned(),
        payload: value.into(),
        qos: 0,
        retain: true,
        props: None,
        origin: None,
    };
    router.route_internal(msg).await;
}

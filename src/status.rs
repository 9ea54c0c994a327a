//! What the gateway says about its own buffer on the status topics.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Message};
use crate::reading::Origin;
use crate::store::DropTotals;

/// Drop summaries go out at most this often, so a burst of drops is one message, not thousands.
pub const DROPS_EVERY: Duration = Duration::from_secs(10);

/// `{"dropped":{"max_rows":{"tank-1":12}},"total":12}`; messages of no device count under "-".
pub fn drops_payload(totals: &DropTotals) -> Bytes {
    let mut by_reason: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for ((reason, device), n) in totals {
        let device = if device.is_empty() { "-" } else { device };
        *by_reason
            .entry(reason)
            .or_default()
            .entry(device)
            .or_default() += n;
    }
    let total: u64 = totals.values().sum();
    let json = serde_json::json!({ "dropped": by_reason, "total": total });
    Bytes::from(json.to_string())
}

/// Publishes the drop totals, retained, on `topic` whenever they change (at most once per
/// [`DROPS_EVERY`]), until `stop`. Totals from an earlier run are published at start.
pub async fn publish_drops(
    mut drops: watch::Receiver<DropTotals>,
    bus: Bus,
    topic: String,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                changed = drops.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
        let totals = drops.borrow_and_update().clone();
        if !(first && totals.is_empty()) {
            bus.publish(Message {
                topic: topic.clone(),
                payload: drops_payload(&totals),
                qos: 1,
                retain: true,
                props: None,
                origin: Some(Origin::status("")),
            })
            .await;
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(DROPS_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_grouped_by_reason_then_device() {
        let mut t = DropTotals::new();
        t.insert(("max_rows".into(), "tank-1".into()), 12);
        t.insert(("max_rows".into(), "".into()), 1);
        t.insert(("max_age".into(), "temp-1".into()), 3);
        assert_eq!(
            drops_payload(&t),
            r#"{"dropped":{"max_age":{"temp-1":3},"max_rows":{"-":1,"tank-1":12}},"total":16}"#
        );
    }
}

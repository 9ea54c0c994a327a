//! An MQTT subscriber that records what it receives, for assertions on topics and payloads.

use super::*;

#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// The QoS it was delivered at: at most what the subscriber asked for and the sender used.
    pub qos: u8,
    /// Set when the broker sent it again (after this subscriber reconnected).
    pub dup: bool,
    pub at: std::time::SystemTime,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic, self.payload
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The gateway status's `status` (its payload is a JSON object); the text otherwise.
    pub fn status(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.payload)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.text())
    }
}

/// An MQTT subscriber that keeps everything it receives, reconnecting on its own. With
/// `persistent`, the broker queues QoS 1 messages for it while it is disconnected.
pub struct Subscriber {
    pub got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(port: u16, id: &str, filter: &str, persistent: bool) -> Subscriber {
        Self::start_at(port, id, filter, persistent, QoS::AtLeastOnce).await
    }

    pub async fn start_at(
        port: u16,
        id: &str,
        filter: &str,
        persistent: bool,
        qos: QoS,
    ) -> Subscriber {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 64);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(filter.clone(), qos).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            qos: p.qos as u8,
                            dup: p.dup,
                            at: std::time::SystemTime::now(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("subscriber did not get SUBACK within 10 s")
            .expect("subscriber task ended");
        Subscriber { got, task }
    }

    pub fn snapshot(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Sequence numbers of readings received so far (status messages have none).
    pub fn seqs(&self) -> BTreeSet<u64> {
        self.snapshot()
            .iter()
            .filter(|m| !m.topic.ends_with("/status"))
            .filter_map(|m| m.json()["seq"].as_u64())
            .collect()
    }

    /// Per (device, replayed?), the first arrival of each seq, in arrival order. Live readings
    /// and replayed ones are two streams, each in order per device.
    pub fn first_arrivals_by_stream(&self) -> BTreeMap<(String, bool), Vec<u64>> {
        let mut seen = BTreeSet::new();
        let mut out: BTreeMap<(String, bool), Vec<u64>> = BTreeMap::new();
        for m in self.snapshot() {
            if m.topic.ends_with("/status") {
                continue;
            }
            let v = m.json();
            let Some(seq) = v["seq"].as_u64() else {
                continue;
            };
            let replay = v["replay"] == true;
            let device = m.topic.split('/').nth(2).unwrap_or_default().to_string();
            if seen.insert(seq) {
                out.entry((device, replay)).or_default().push(seq);
            }
        }
        out
    }

    /// Waits until every seq from 1 up to at least `target` has arrived. On timeout, returns the
    /// first 20 missing ones.
    pub async fn wait_gapless(&self, target: u64, timeout: Duration) -> Result<(), Vec<u64>> {
        let complete = |s: &BTreeSet<u64>| {
            s.last().is_some_and(|&m| m >= target)
                && s.first() == Some(&1)
                && s.len() as u64 == *s.last().unwrap()
        };
        if wait_until(timeout, || complete(&self.seqs())).await {
            return Ok(());
        }
        let s = self.seqs();
        let last = s.last().copied().unwrap_or(0).max(target);
        Err((1..=last).filter(|x| !s.contains(x)).take(20).collect())
    }

    /// Seqs that arrived marked as replayed.
    pub fn replayed(&self) -> BTreeSet<u64> {
        self.snapshot()
            .iter()
            .filter(|m| !m.topic.ends_with("/status"))
            .map(Received::json)
            .filter(|v| v["replay"] == true)
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

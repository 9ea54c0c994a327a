//! The way into the normalize stage for a source that outlives the pipeline: the MQTT-SN
//! gateway's nodes. A reload replaces the pipeline (adapters and normalize, with the new topic
//! templates and points); such a source sends to whichever pipeline runs, and while one is being
//! replaced, waits for the next.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::reading::Reading;

#[derive(Clone)]
pub struct Inlet(Arc<watch::Sender<Option<mpsc::Sender<Reading>>>>);

impl Default for Inlet {
    fn default() -> Inlet {
        Inlet(Arc::new(watch::Sender::new(None)))
    }
}

impl Inlet {
    /// The running pipeline's channel; `None` while it stops, so that its normalize task sees
    /// every sender gone once the adapters are and ends.
    pub fn set(&self, tx: Option<mpsc::Sender<Reading>>) {
        self.0.send_replace(tx);
    }

    /// Hands `r` to the running pipeline, waiting for one if none runs. Readings handed over
    /// before a reload are normalized before any handed over after it: the old pipeline ends
    /// only once it has drained them, and the new one starts after that.
    pub async fn send(&self, r: Reading) {
        let mut current = self.0.subscribe();
        let mut r = r;
        loop {
            let tx = current.borrow_and_update().clone();
            if let Some(tx) = tx {
                match tx.send(r).await {
                    Ok(()) => return,
                    // That pipeline's normalize ended: the next one takes it.
                    Err(mpsc::error::SendError(back)) => r = back,
                }
            }
            if current.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Quality;

    fn reading(v: f64) -> Reading {
        Reading {
            device: "n1".into(),
            quantity: "temperature".into(),
            value: v,
            unit: None,
            ts: std::time::SystemTime::now(),
            quality: Quality::Good,
        }
    }

    #[tokio::test]
    async fn readings_go_to_the_pipeline_that_runs_and_wait_for_the_next() {
        let inlet = Inlet::default();
        let (tx, mut first) = mpsc::channel(4);
        inlet.set(Some(tx));
        inlet.send(reading(1.0)).await;
        assert_eq!(first.recv().await.map(|r| r.value), Some(1.0));
        // Between two pipelines: the reading waits.
        inlet.set(None);
        assert_eq!(
            first.recv().await,
            None,
            "the old pipeline sees its inlet gone"
        );
        let waiting = tokio::spawn({
            let inlet = inlet.clone();
            async move { inlet.send(reading(2.0)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let (tx, mut second) = mpsc::channel(4);
        inlet.set(Some(tx));
        waiting.await.unwrap();
        assert_eq!(second.recv().await.map(|r| r.value), Some(2.0));
    }
}

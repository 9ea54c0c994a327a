//! How a connection ends: the session handed back to the router first, then the socket closed
//! with a bound, after a reason the client may still read.

use super::*;

impl Connection {
    /// Hands the session back to the router and publishes the will if due, then closes the
    /// socket: the session never waits on a client that does not read.
    pub(super) async fn finish(&mut self, end: End) {
        let peer = self.peer;
        let client_id = self.attached.as_ref().map(|a| a.client_id.clone());
        match &end {
            End::Shutdown => {
                tracing::debug!(%peer, ?client_id, "closing client: broker shutting down")
            }
            End::Closed(reason) => {
                tracing::debug!(%peer, ?client_id, "client disconnected: {reason}")
            }
            End::Told(_, why) => {
                tracing::debug!(%peer, ?client_id, "closing client: {why}")
            }
        }
        self.hand_back(&end).await;
        let last_word = match end {
            End::Shutdown => Some((mqtt5::SERVER_SHUTTING_DOWN, "server shutting down")),
            End::Told(code, why) => Some((code, why)),
            End::Closed(_) => None,
        };
        let stopping = last_word.is_some_and(|(code, _)| code == mqtt5::SERVER_SHUTTING_DOWN);
        let close = async {
            if let Some((code, why)) = last_word {
                self.last_word(code, why).await;
            }
            // TCP half-closes here: the client reads to the end of what it was sent.
            self.io.shutdown().await
        };
        let closed = tokio::time::timeout(CLOSE_WAIT, close).await;
        if matches!(closed, Ok(Ok(()))) && self.said_why && !self.torn && !stopping {
            self.linger().await;
        }
    }

    /// Reads and drops what the client still sends, until it closes or [`LINGER`] passes.
    pub(super) async fn linger(&mut self) {
        let mut scratch = BytesMut::new();
        let drain = async {
            loop {
                scratch.clear();
                let read = std::future::poll_fn(|cx| {
                    self.io.poll_read_into(cx, &mut scratch, 4 * MIN_READ)
                });
                if !matches!(read.await, Ok((1.., _))) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(LINGER, drain) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Detaches from the router (which persists the session and lets a connection waiting to
    /// take the client id over go on), and publishes the will if due.
    pub(super) async fn hand_back(&mut self, end: &End) {
        let peer = self.peer;
        let Some(attached) = self.attached.take() else {
            return;
        };
        let will = self
            .session
            .take_will()
            .filter(|w| self.may_publish_as(&attached.client_id, &w.topic))
            .filter(|_| !matches!(end, End::Shutdown))
            .map(|msg| DelayedWill {
                msg,
                delay: self.session.will_delay(),
            });
        let detach = Detach {
            state: self.session.take_state(),
            will,
            // MQTT 5: CONNECT's interval or the one DISCONNECT set; 3.1.1 keeps CONNECT's.
            expiry: self.session.session_expiry(),
        };
        let will = self
            .router
            .detach(&attached.client_id, attached.conn_id, detach);
        if let Some(will) = will {
            tracing::debug!(%peer, client_id = attached.client_id, topic = will.topic, "publishing will");
            tokio::select! {
                _ = Box::pin(self.router.route(will)) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }
}

//! Who may connect, publish and subscribe: credentials and the ACL, as one connection asks.

use super::*;

impl Connection {
    /// Checks CONNECT credentials: `Some(code)` to refuse with. PBKDF2 runs on a blocking thread.
    pub(super) async fn authenticate(
        &mut self,
        username: Option<String>,
        password: Option<bytes::Bytes>,
    ) -> Result<Option<u8>, End> {
        if self.cert_identity {
            tracing::debug!(peer = %self.peer, user = self.verified_user, "user name from the client certificate");
            return Ok(None);
        }
        let router = self.router.clone();
        let slow = router.auth.is_slow(username.as_deref());
        let user = username.clone();
        let check = move || {
            router
                .auth
                .authenticate(user.as_deref(), password.as_deref())
        };
        let verdict = if slow {
            let task = tokio::task::spawn_blocking(check);
            tokio::select! {
                v = task => v.unwrap_or(Verdict::NotAuthorized),
                _ = self.shutdown.cancelled() => return Err(End::Shutdown),
            }
        } else {
            check()
        };
        match verdict {
            Verdict::Allowed { verified } => {
                self.verified_user = username.filter(|_| verified);
                Ok(None)
            }
            refused => {
                tracing::info!(peer = %self.peer, ?username, "refused MQTT client: {refused:?}");
                Ok(Some(if refused == Verdict::BadCredentials {
                    connack::BAD_USER_NAME_OR_PASSWORD
                } else {
                    connack::NOT_AUTHORIZED
                }))
            }
        }
    }

    /// The ACL's word on a publish (or will) from this client; a denial is counted.
    pub(super) fn may_publish(&self, topic: &str) -> bool {
        let client_id = self.attached.as_ref().map_or("", |a| a.client_id.as_str());
        self.may_publish_as(client_id, topic)
    }

    pub(super) fn may_publish_as(&self, client_id: &str, topic: &str) -> bool {
        // Only the broker speaks on $SYS.
        let allowed = !topic.starts_with("$SYS")
            && self
                .router
                .auth
                .may_publish(self.verified_user.as_deref(), client_id, topic);
        if !allowed {
            Stats::add(&self.router.stats.denied, 1);
            tracing::debug!(peer = %self.peer, topic, "publish denied by the ACL");
        }
        allowed
    }

    /// Subscribes to what the ACL allows; SUBACK codes with 0x80 for the rest.
    pub(super) fn subscribe(
        &mut self,
        filters: Vec<(String, SubOptions)>,
        sub_id: Option<u32>,
    ) -> Vec<u8> {
        let Some(a) = &self.attached else {
            return vec![mqtt5::UNSPECIFIED_ERROR; filters.len()];
        };
        let auth = &self.router.auth;
        let user = self.verified_user.as_deref();
        let allowed: Vec<bool> = filters
            .iter()
            .map(|(f, _)| auth.may_subscribe(user, &a.client_id, f))
            .collect();
        let granted: Vec<(String, SubOptions)> = filters
            .iter()
            .zip(&allowed)
            .filter(|(_, ok)| **ok)
            .map(|(f, _)| f.clone())
            .collect();
        let mut codes = self
            .router
            .subscribe(&a.client_id, a.conn_id, &granted, sub_id)
            .into_iter();
        allowed
            .iter()
            .map(|ok| {
                if *ok {
                    codes.next().unwrap_or(mqtt5::UNSPECIFIED_ERROR)
                } else {
                    mqtt5::UNSPECIFIED_ERROR
                }
            })
            .collect()
    }
}

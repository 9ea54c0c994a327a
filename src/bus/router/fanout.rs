//! The router's subscriptions and fan-out: subscribe/unsubscribe (options, ids, shared groups,
//! retained messages on subscribe) and routing a message to every session and in-process
//! subscriber it matches.

use super::*;

impl Router {
    /// Adds or replaces subscriptions (already validated, QoS already granted) and queues the
    /// retained messages they match, with the retain flag set, as each one's retain handling
    /// says (0: always, 1: for a new subscription only, 2: never); shared ones (`$share/...`)
    /// join their group and get no retained messages (MQTT 5 4.8.2). `sub_id` (MQTT 5) goes
    /// with every message delivered for them. Returns the SUBACK return codes.
    pub fn subscribe(
        &self,
        client_id: &str,
        conn_id: u64,
        filters: &[(String, SubOptions)],
        sub_id: Option<u32>,
    ) -> Vec<u8> {
        let mut st = self.lock();
        let st = &mut *st;
        let codes = filters.iter().map(|(_, o)| o.qos).collect();
        let Some(entry) = st.clients.get_mut(client_id) else {
            return codes;
        };
        if entry.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return codes;
        }
        let mut want_retained = Vec::new();
        for (filter, o) in filters {
            let sub = Sub {
                qos: o.qos,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                id: sub_id.unwrap_or(0),
            };
            if filter.starts_with(topic::SHARE_PREFIX) {
                st.shared.subscribe(filter, client_id, sub);
                continue;
            }
            let existed = match entry.subs.iter_mut().find(|(f, _)| f == filter) {
                Some(existing) => {
                    existing.1 = sub;
                    true
                }
                None => {
                    entry.subs.push((filter.clone(), sub));
                    false
                }
            };
            if o.retain_handling == 0 || (o.retain_handling == 1 && !existed) {
                want_retained.push((filter, o.qos));
            }
        }
        let now = std::time::Instant::now();
        let live = |m: &Message| !m.props.as_ref().is_some_and(|p| p.expired(now));
        st.retained.retain(|_, m| live(m));
        if let (true, Some(p)) = (entry.expiry != 0, &self.persist) {
            let subs = stored_subs(&entry.subs, &st.shared, client_id);
            p.session(client_id, &subs, entry.saved(), entry.expiry, true);
        }
        for msg in st.retained.values() {
            let granted = want_retained
                .iter()
                .filter(|(f, _)| {
                    !f.starts_with(topic::SHARE_PREFIX) && topic::matches(f, &msg.topic)
                })
                .map(|(_, q)| *q)
                .max();
            if let Some(granted) = granted {
                let out = Message {
                    qos: msg.qos.min(granted),
                    retain: true,
                    props: with_sub_ids(&msg.props, sub_id.into_iter().collect()),
                    ..msg.clone()
                };
                Stats::add(&self.stats.dropped, entry.queue.push(out));
            }
        }
        codes
    }

    /// Removes subscriptions by their exact filter, `$share/{group}/...` ones included; says
    /// for each filter whether there was one.
    pub fn unsubscribe(&self, client_id: &str, conn_id: u64, filters: &[String]) -> Vec<bool> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut existed = vec![false; filters.len()];
        if let Some(entry) = st.clients.get_mut(client_id) {
            if entry.conn.as_ref().map(|c| c.id) == Some(conn_id) {
                for (i, f) in filters.iter().enumerate() {
                    existed[i] = entry.subs.iter().any(|(s, _)| s == f);
                }
                entry.subs.retain(|(f, _)| !filters.contains(f));
                for (i, f) in filters.iter().enumerate() {
                    if f.starts_with(topic::SHARE_PREFIX) {
                        existed[i] = st.shared.unsubscribe(f, client_id);
                    }
                }
                if let (true, Some(p)) = (entry.expiry != 0, &self.persist) {
                    let subs = stored_subs(&entry.subs, &st.shared, client_id);
                    p.session(client_id, &subs, entry.saved(), entry.expiry, true);
                }
            }
        }
        existed
    }

    /// Stores/deletes the retained message, queues the message for every matching client
    /// session and one member of every matching shared group, and hands it to every matching
    /// in-process subscriber, waiting for room there. Returns how many sessions and in-process
    /// subscriptions it went to.
    pub async fn route(&self, msg: Message) -> usize {
        self.route_from(msg, None).await
    }

    /// [`Router::route`] of a message published by client `from`, which its own subscriptions
    /// with MQTT 5 "no local" do not get.
    pub async fn route_from(&self, msg: Message, from: Option<&str>) -> usize {
        Stats::add(&self.stats.messages_in, 1);
        self.fan_out(msg, from, false, false).await.0
    }

    /// [`Router::route`] of one of the gateway's own readings: its retained copy on disk is
    /// coalesced (see `persist::coalesce`).
    pub async fn route_own(&self, msg: Message) -> usize {
        Stats::add(&self.stats.messages_in, 1);
        self.fan_out(msg, None, false, true).await.0
    }

    /// [`Router::route_from`] for a message whose acknowledgement to its publisher should wait
    /// until the durable subscribers it matched have made it durable: the match count, and what
    /// to wait for.
    pub async fn route_acked(&self, msg: Message, from: Option<&str>) -> (usize, Commit) {
        Stats::add(&self.stats.messages_in, 1);
        self.fan_out(msg, from, true, false).await
    }

    /// [`Router::route`] without counting the message as received: the broker's own `$SYS`.
    pub async fn route_internal(&self, msg: Message) {
        self.fan_out(msg, None, false, false).await;
    }

    /// Puts `out` in the queue of `client_id`'s session (under the lock): a connected client's
    /// full queue is left in `waits` for a brief wait after the lock; an offline (persistent)
    /// session queues QoS 1/2 only, written through to the store. Returns the messages dropped.
    fn queue_for(
        &self,
        client_id: &str,
        entry: &ClientEntry,
        out: Message,
        waits: &mut Vec<(std::sync::Arc<ClientQueue>, Message)>,
    ) -> u64 {
        match (&entry.conn, &self.persist) {
            (Some(_), _) if !entry.queue.fits_or_stalled(&out) => {
                waits.push((entry.queue.clone(), out));
                0
            }
            (None, _) if out.qos == 0 => 0,
            (None, Some(p)) => p.queue(client_id, &entry.queue, out),
            _ => entry.queue.push(out),
        }
    }

    /// `own`: one of the gateway's own readings, whose retained copy is coalesced.
    async fn fan_out(
        &self,
        msg: Message,
        from: Option<&str>,
        acked: bool,
        own: bool,
    ) -> (usize, Commit) {
        let mut matched = 0;
        let mut waits = Vec::new();
        let senders: Vec<InprocTx> = {
            let mut st = self.lock();
            let st = &mut *st;
            if msg.retain {
                if msg.payload.is_empty() {
                    st.retained.remove(&msg.topic);
                } else {
                    st.retained.insert(msg.topic.clone(), msg.clone());
                }
                match &self.persist {
                    Some(p) if own => p.retained_own(&msg),
                    Some(p) => p.retained(&msg),
                    None => {}
                }
            }
            let mut dropped = 0;
            for (client_id, entry) in &st.clients {
                let own = from == Some(client_id.as_str());
                let mut granted = None;
                let mut retain = false;
                let mut ids = Vec::new();
                for (_, sub) in entry
                    .subs
                    .iter()
                    .filter(|(f, s)| !(own && s.no_local) && topic::matches(f, &msg.topic))
                {
                    granted = granted.max(Some(sub.qos));
                    retain |= sub.retain_as_published && msg.retain;
                    if sub.id != 0 {
                        ids.push(sub.id);
                    }
                }
                let Some(granted) = granted else { continue };
                matched += 1;
                let qos = msg.qos.min(granted);
                let out = Message {
                    qos,
                    retain,
                    props: with_sub_ids(&msg.props, ids),
                    ..msg.clone()
                };
                dropped += self.queue_for(client_id, entry, out, &mut waits);
            }
            let clients = &st.clients;
            let online = |id: &str| clients.get(id).is_some_and(|e| e.conn.is_some());
            for (id, sub) in st.shared.pick(&msg.topic, msg.qos, online) {
                let Some(entry) = clients.get(id) else {
                    continue;
                };
                matched += 1;
                let ids = (sub.id != 0).then_some(sub.id).into_iter().collect();
                let out = Message {
                    qos: msg.qos.min(sub.qos),
                    retain: sub.retain_as_published && msg.retain,
                    props: with_sub_ids(&msg.props, ids),
                    ..msg.clone()
                };
                dropped += self.queue_for(id, entry, out, &mut waits);
            }
            Stats::add(&self.stats.dropped, dropped);
            let senders: Vec<_> = st
                .inproc
                .values()
                .filter(|s| s.filters.iter().any(|f| topic::matches(f, &msg.topic)))
                .map(|s| s.tx.clone())
                .collect();
            matched += senders.len();
            senders
        };
        for (queue, out) in waits {
            let dropped = queue.push_waiting(out).await;
            Stats::add(&self.stats.dropped, dropped);
        }
        let out = Message {
            retain: false,
            ..msg
        };
        let mut commit = Commit::default();
        let mut gone = Vec::new();
        for tx in senders {
            let sent = match tx {
                InprocTx::Plain(tx) => tx.send(out.clone()).await.is_ok(),
                InprocTx::Durable(tx) => {
                    let (done, rx) = match acked {
                        true => {
                            let (done, rx) = oneshot::channel();
                            (Some(done), Some(rx))
                        }
                        false => (None, None),
                    };
                    let sent = tx.send((from_client(&out, from), done)).await.is_ok();
                    match rx {
                        Some(rx) if sent => commit.push(rx),
                        Some(rx) => gone.push(rx),
                        None => {}
                    }
                    sent
                }
            };
            if sent {
                Stats::add(&self.stats.messages_out, 1);
            }
        }
        // A durable subscriber that went away after it matched (a reload's old forward stage)
        // took nothing. Unless another one took the message, its dropped sender fails the
        // commit, so the publisher is not acknowledged and publishes again.
        if commit.is_empty() {
            gone.into_iter().for_each(|rx| commit.push(rx));
        }
        (matched, commit)
    }
}

/// The message's properties with these subscription identifiers (a copy only when there are
/// any, or when the message carried some from another delivery).
fn with_sub_ids(
    props: &Option<std::sync::Arc<MessageProps>>,
    ids: Vec<u32>,
) -> Option<std::sync::Arc<MessageProps>> {
    let unchanged = match props {
        Some(p) => p.sub_ids == ids,
        None => ids.is_empty(),
    };
    if unchanged {
        return props.clone();
    }
    let mut p = props.as_deref().cloned().unwrap_or_default();
    p.sub_ids = ids;
    Some(std::sync::Arc::new(p))
}

/// A client's message as the outbox gets it: telemetry of that client, whose id its drops are
/// counted under. The gateway's own messages carry their origin already.
fn from_client(m: &Message, from: Option<&str>) -> Message {
    let mut m = m.clone();
    if let (None, Some(client)) = (&m.origin, from) {
        m.origin = Some(std::sync::Arc::new(crate::reading::Origin {
            class: crate::reading::Class::Telemetry,
            device: client.to_string(),
            sample: None,
        }));
    }
    m
}

//! The `broker:` section: listeners, limits, TLS and `broker.auth` (users, anonymous, ACL).

use std::collections::HashMap;

use super::auth::{AclRule, AuthConfig, PasswordHash};
use super::topic;
use std::net::SocketAddr;

use crate::config::decode::{at_path, scalar_text, MapReader};
use crate::config::units::secs;
use crate::config::yaml::{Node, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    /// Longest time a session outlives its connection, whatever the client asked for (3.1.1
    /// persistent sessions otherwise never expire); `None`: as the client asked.
    pub max_session_expiry: Option<std::time::Duration>,
    pub max_packet_size: usize,
    /// Per session: messages queued for a client that is offline or slow.
    pub max_queued_messages: usize,
    /// Per session: payload + topic bytes queued, the other bound on the same queue.
    pub max_queued_bytes: usize,
    /// Which message a full session queue drops.
    pub queue_drop: crate::bus::QueueDrop,
    /// Per connection: outbound QoS 1/2 messages sent and not yet acknowledged.
    pub max_inflight: usize,
    /// MQTT 5: inbound QoS 1/2 messages a client may have unacknowledged (Receive Maximum).
    pub receive_maximum: u16,
    /// MQTT 5: topic aliases a client may set toward the broker (Topic Alias Maximum).
    pub topic_alias_max: u16,
    /// MQTT 5: the longest keepalive granted, in seconds (Server Keep Alive); 0: no limit.
    pub max_keepalive: u16,
    /// How often `$SYS/broker/...` is published; zero: never.
    pub sys_interval: std::time::Duration,
    pub auth: crate::bus::auth::AuthConfig,
    /// MQTT over WebSocket (subprotocol `mqtt`); off unless set.
    pub websocket: Option<SocketAddr>,
    /// MQTT over TLS; off unless set.
    pub tls: Option<crate::bus::tls::TlsListener>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_connections: 1000,
            max_session_expiry: None,
            max_packet_size: 256 << 10,
            max_queued_messages: 1000,
            max_queued_bytes: 1 << 20,
            queue_drop: crate::bus::QueueDrop::Oldest,
            max_inflight: crate::bus::session::MAX_INFLIGHT,
            receive_maximum: 64,
            topic_alias_max: 16,
            max_keepalive: 0,
            sys_interval: std::time::Duration::from_secs(10),
            auth: Default::default(),
            websocket: None,
            tls: None,
        }
    }
}

pub fn decode_broker(m: &mut MapReader) -> Option<BrokerConfig> {
    let d = BrokerConfig::default();
    let listen = m.socket_addr("listen");
    let listen_ok = listen.is_some() || m.node("listen").is_none();
    let max_connections = m
        .int("max_connections", 1..=100_000usize)
        .unwrap_or(d.max_connections);
    let max_session_expiry = m
        .duration(
            "max_session_expiry",
            secs(1)..=secs(u64::from(u32::MAX - 1)),
        )
        .or(d.max_session_expiry);
    let max_packet_size = m
        .size("max_packet_size", 64..=256 << 20)
        .unwrap_or(d.max_packet_size as u64);
    let max_queued_messages = m
        .int("max_queued_messages", 1..=1_000_000usize)
        .unwrap_or(d.max_queued_messages);
    let max_queued_bytes = m
        .size("max_queued_bytes", 1024..=1 << 30)
        .unwrap_or(d.max_queued_bytes as u64);
    let queue_drop = match m.one_of("queue_drop", &["oldest", "newest"]) {
        Some("newest") => crate::bus::QueueDrop::Newest,
        _ => d.queue_drop,
    };
    let max_inflight = m
        .int("max_inflight", 1..=65_535usize)
        .unwrap_or(d.max_inflight);
    let receive_maximum = m
        .int("receive_maximum", 1..=65_535u16)
        .unwrap_or(d.receive_maximum);
    let topic_alias_max = m
        .int("topic_alias_max", 0..=65_535u16)
        .unwrap_or(d.topic_alias_max);
    let max_keepalive = m
        .duration("max_keepalive", secs(1)..=secs(65_535))
        .map_or(d.max_keepalive, |k| {
            u16::try_from(k.as_secs()).unwrap_or(u16::MAX)
        });
    let sys_interval = m
        .duration("sys_interval", secs(0)..=secs(86_400))
        .unwrap_or(d.sys_interval);
    let websocket = m.socket_addr("websocket");
    let websocket_ok = websocket.is_some() || m.node("websocket").is_none();
    let tls = match m.node("tls") {
        None => Some(None),
        Some(_) => m
            .section("tls")
            .and_then(|mut t| super::tls::decode(&mut t))
            .map(Some),
    };
    // Client certificates name users that have no password.
    let cert_users = matches!(&tls, Some(Some(t)) if t.identity_as_username);
    let auth = m
        .section("auth")
        .and_then(|mut a| decode_auth(&mut a, cert_users));
    let listen = listen.unwrap_or(d.listen);
    let taken = |addr: std::net::SocketAddr, key: &str, m: &mut MapReader| -> bool {
        if addr.port() != 0 && addr == listen {
            m.error(key, format!("{addr} is already `broker.listen`"));
            return false;
        }
        true
    };
    let websocket_ok = websocket_ok && websocket.is_none_or(|a| taken(a, "websocket", m));
    let tls_ok = match &tls {
        Some(Some(t)) if Some(t.listen) == websocket && t.listen.port() != 0 => {
            m.error("tls", format!("{} is already `broker.websocket`", t.listen));
            false
        }
        Some(Some(t)) => taken(t.listen, "tls", m),
        _ => true,
    };
    (listen_ok && websocket_ok && tls_ok).then_some(())?;
    Some(BrokerConfig {
        listen,
        max_connections,
        max_session_expiry,
        // At most 256MiB / 1GiB: fits any usize this runs on.
        max_packet_size: usize::try_from(max_packet_size).unwrap_or(usize::MAX),
        max_queued_messages,
        max_queued_bytes: usize::try_from(max_queued_bytes).unwrap_or(usize::MAX),
        queue_drop,
        max_inflight,
        receive_maximum,
        topic_alias_max,
        max_keepalive,
        sys_interval,
        auth: auth?,
        websocket,
        tls: tls?,
    })
}

/// Decodes `broker.auth`; an absent section is the default (anonymous, no ACL). With
/// `cert_users` (`broker.tls.identity_as_username`) users may also come from client
/// certificates, so rules may name users without a password.
pub fn decode_auth(m: &mut MapReader, cert_users: bool) -> Option<AuthConfig> {
    let anonymous = m.bool("anonymous");
    let anonymous_ok = anonymous.is_some() || m.node("anonymous").is_none();
    let users = decode_users(m);
    let acl = decode_acl(m, users.as_ref().filter(|_| !cert_users));
    let mut ok = anonymous_ok;
    let no_users = users.as_ref().is_some_and(HashMap::is_empty) && !cert_users;
    if anonymous == Some(false) && no_users {
        m.error(
            "anonymous",
            "with `anonymous: false` no client could connect: add `users` (or client certificates, `broker.tls.identity_as_username`)",
        );
        ok = false;
    }
    let (users, acl) = (users?, acl?);
    ok.then_some(AuthConfig {
        anonymous: anonymous.unwrap_or(true),
        users,
        acl,
    })
}

fn decode_users(m: &mut MapReader) -> Option<HashMap<String, PasswordHash>> {
    let path = m.path_of("users");
    let Some(node) = m.node("users") else {
        return Some(HashMap::new());
    };
    let Value::Map(entries) = &node.value else {
        let msg = at_path(
            &path,
            &format!(
                "expected a mapping of user name to password hash, found {}",
                node.describe()
            ),
        );
        m.errors().push(node.pos, msg);
        return None;
    };
    let mut users = HashMap::new();
    let mut ok = true;
    for entry in entries {
        let key_path = format!("{path}.{}", entry.key);
        let parsed = scalar_text(&entry.value, "a password hash")
            .and_then(|(text, _)| PasswordHash::parse(text));
        match parsed {
            Ok(hash) if valid_user(&entry.key) => {
                users.insert(entry.key.clone(), hash);
            }
            Ok(_) => {
                let msg = at_path(
                    &key_path,
                    "a user name must be non-empty without `+`, `#`, `/` or U+0000",
                );
                m.errors().push(entry.key_pos, msg);
                ok = false;
            }
            Err(msg) => {
                m.errors().push(entry.value.pos, at_path(&key_path, &msg));
                ok = false;
            }
        }
    }
    ok.then_some(users)
}

/// A user name `%u` can stand for without changing a pattern's levels.
fn valid_user(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#', '/', '\0'])
}

/// `users`: to check rule owners against, when they decoded.
fn decode_acl(
    m: &mut MapReader,
    users: Option<&HashMap<String, PasswordHash>>,
) -> Option<Option<Vec<AclRule>>> {
    let path = m.path_of("acl");
    let Some(node) = m.node("acl") else {
        return Some(None);
    };
    let Value::Seq(items) = &node.value else {
        let msg = at_path(
            &path,
            &format!("expected a list of rules, found {}", node.describe()),
        );
        m.errors().push(node.pos, msg);
        return None;
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match decode_rule(item, format!("{path}[{i}]"), users, m) {
            Some(rule) => rules.push(rule),
            None => ok = false,
        }
    }
    ok.then_some(Some(rules))
}

fn decode_rule(
    item: &Node,
    path: String,
    users: Option<&HashMap<String, PasswordHash>>,
    parent: &mut MapReader,
) -> Option<AclRule> {
    let mut r = MapReader::new(item, path, item.pos, parent.errors())?;
    let user = r.string("user");
    let mut user_ok = user.is_some() || r.node("user").is_none();
    if let (Some(user), Some(users)) = (&user, users) {
        if !users.contains_key(user) {
            let msg = format!("`{user}` is not in `broker.auth.users`; only users with a password can have their own rules");
            r.error("user", msg);
            user_ok = false;
        }
    }
    let patterns = |r: &mut MapReader, key: &str| -> Option<Vec<String>> {
        let Some(list) = r.strings(key) else {
            return r.node(key).is_none().then(Vec::new);
        };
        let mut ok = true;
        let mut out = Vec::with_capacity(list.len());
        for p in list {
            // `%u`/`%c` stand for one whole level's text, so check with a stand-in value.
            if topic::valid_topic_filter(&p.value.replace("%u", "u").replace("%c", "c")) {
                out.push(p.value);
            } else {
                let msg = at_path(
                    &r.path_of(key),
                    &format!("`{}` is not a valid topic filter", p.value),
                );
                r.errors().push(p.pos, msg);
                ok = false;
            }
        }
        ok.then_some(out)
    };
    let publish = patterns(&mut r, "publish");
    let subscribe = patterns(&mut r, "subscribe");
    let (publish, subscribe) = (publish?, subscribe?);
    user_ok.then_some(())?;
    if publish.is_empty() && subscribe.is_empty() {
        r.error("publish", "a rule needs `publish` or `subscribe` patterns");
        return None;
    }
    Some(AclRule {
        user,
        publish,
        subscribe,
    })
}

#[cfg(test)]
mod tests;

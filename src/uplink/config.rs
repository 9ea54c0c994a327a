//! The `uplink:` section: brokers, failover, TLS files, credentials and forward routes.

use std::time::Duration;

use crate::config::decode::{at_path, scalar_text, MapReader, Spanned};
use crate::config::template::{expand, placeholder_problem};
use crate::config::units::{ms, secs};
use crate::config::yaml::Value;

const DEFAULT_CLIENT_ID: &str = "{site}-{gateway}";
const DEFAULT_FORWARD: &str = "{site}/{gateway}/#";

#[derive(Debug, Clone, PartialEq)]
pub struct UplinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    /// Already resolved from `password`, `password_file` or `password_env`.
    pub password: Option<String>,
    pub keepalive: Duration,
    /// 1 or 2: the QoS of routes that do not set their own.
    pub qos: u8,
    /// What on the local bus is buffered and sent upstream, and at which QoS.
    pub forward: Vec<Route>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_inflight: u16,
    /// Brokers tried in turn after `host:port` when it fails, as (host, port).
    pub failover: Vec<(String, u16)>,
    /// `None`: plain TCP.
    pub tls: Option<crate::uplink::tls::TlsConfig>,
    /// Messages per second for replaying a backlog after an outage; 0: as fast as the link
    /// takes them. Live readings go first either way.
    pub replay_rate: u32,
    /// How long a live reading may wait behind replayed backlog on the link; the replay's share
    /// of the in-flight window follows the measured acknowledgement rate to keep it so.
    pub live_max_delay: Duration,
}

/// One forward rule: messages matching `filter` go upstream at `qos`. The first rule that
/// matches a topic decides its QoS.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub filter: String,
    pub qos: u8,
}

impl UplinkConfig {
    /// The filters of all routes, for the bus subscription that feeds the outbox.
    pub fn forward_filters(&self) -> Vec<String> {
        self.forward.iter().map(|r| r.filter.clone()).collect()
    }
}

const PASSWORD_KEYS: [&str; 3] = ["password", "password_file", "password_env"];

fn decode_password(m: &mut MapReader) -> Result<Option<String>, ()> {
    let given: Vec<&str> = PASSWORD_KEYS
        .into_iter()
        .filter(|k| m.node(k).is_some())
        .collect();
    let Some(&source) = given.first() else {
        return Ok(None);
    };
    if given.len() > 1 {
        for other in &given[1..] {
            m.key_error(
                other,
                format!(
                    "`{other}` conflicts with `{source}`: set at most one of password, password_file, password_env"
                ),
            );
        }
        return Err(());
    }
    let value = m.string(source).ok_or(())?;
    match source {
        "password_file" => match std::fs::read_to_string(&value) {
            Ok(text) => Ok(Some(text.trim_end_matches(['\n', '\r']).to_string())),
            Err(e) => {
                m.error(source, format!("cannot read password file `{value}`: {e}"));
                Err(())
            }
        },
        "password_env" => match std::env::var(&value) {
            Ok(password) => Ok(Some(password)),
            Err(std::env::VarError::NotPresent) => {
                m.error(source, format!("environment variable `{value}` is not set"));
                Err(())
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                m.error(
                    source,
                    format!("environment variable `{value}` is not valid UTF-8"),
                );
                Err(())
            }
        },
        _ => Ok(Some(value)),
    }
}

/// Checks an MQTT topic filter: non-empty, `#` only as the whole last level, `+` only as a
/// whole level.
fn filter_problem(filter: &str) -> Option<String> {
    if filter.is_empty() {
        return Some("a topic filter must not be empty".to_string());
    }
    if filter.contains('\0') {
        return Some("a topic filter must not contain NUL".to_string());
    }
    if filter.len() > 65_535 {
        return Some("a topic filter must be at most 65535 bytes".to_string());
    }
    if filter.starts_with(crate::bus::topic::SHARE_PREFIX) {
        return Some(format!(
            "`{filter}` is a shared subscription, for network clients of the local broker; forward the filter after `$share/{{group}}/`"
        ));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some(format!(
                "`{filter}` is not a valid topic filter: `#` must be the whole last level (e.g. a/b/#)"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Some(format!(
                "`{filter}` is not a valid topic filter: `+` must be a whole level (e.g. a/+/c)"
            ));
        }
    }
    None
}

pub fn decode_uplink(m: &mut MapReader, names: Option<(&str, &str)>) -> Option<UplinkConfig> {
    let vars = names.map(|(site, gateway)| [("site", site), ("gateway", gateway)]);
    m.require(&["host"]);
    let host = m.string("host");
    if host.as_deref() == Some("") {
        m.error("host", "must not be empty");
    }
    let port = m.int("port", 1..=65535u16).unwrap_or(1883);

    let client_id = {
        let template = match m.node("client_id") {
            Some(_) => m.string("client_id"),
            None => Some(DEFAULT_CLIENT_ID.to_string()),
        };
        match template {
            Some(t) => match placeholder_problem(&t, &["site", "gateway"]) {
                Some(p) => {
                    m.error("client_id", p);
                    None
                }
                None => vars.and_then(|vars| {
                    let id = expand(&t, &vars);
                    let len = id.chars().count();
                    if (1..=64).contains(&len) {
                        Some(id)
                    } else {
                        m.error(
                            "client_id",
                            format!("`{id}` must be 1 to 64 characters long, got {len}"),
                        );
                        None
                    }
                }),
            },
            None => None,
        }
    };

    let username = m.string("username");
    let username_ok = username.is_some() || m.node("username").is_none();
    let password = decode_password(m);

    let keepalive = m.duration("keepalive", secs(1)..=secs(65_535));
    if let Some(k) = keepalive {
        if k.subsec_nanos() != 0 {
            m.error(
                "keepalive",
                format!(
                    "must be whole seconds, got {}",
                    crate::config::units::format_duration(k)
                ),
            );
        }
    }
    let keepalive_ok = keepalive.is_none_or(|k| k.subsec_nanos() == 0);
    let keepalive = keepalive.unwrap_or(secs(30));
    let qos = m.int("qos", 1..=2u8).unwrap_or(1);

    let forward = decode_routes(m, vars.as_ref().map(|v| &v[..]), qos);

    let reconnect_min = m.duration("reconnect_min", ms(10)..=secs(3600));
    let reconnect_max = m.duration("reconnect_max", Duration::ZERO..=secs(86_400));
    let min_for_check = reconnect_min.or(m.node("reconnect_min").is_none().then_some(secs(1)));
    let mut reconnect_ok = true;
    if let (Some(lo), Some(hi)) = (min_for_check, reconnect_max.or(Some(secs(60)))) {
        if hi < lo {
            let f = crate::config::units::format_duration;
            if m.node("reconnect_max").is_some() {
                m.error(
                    "reconnect_max",
                    format!("must be at least reconnect_min ({}), got {}", f(lo), f(hi)),
                );
            } else {
                m.error(
                    "reconnect_min",
                    format!(
                        "must be at most reconnect_max ({}, the default), got {}",
                        f(hi),
                        f(lo)
                    ),
                );
            }
            reconnect_ok = false;
        }
    }
    let max_inflight = m.int("max_inflight", 1..=65535u16).unwrap_or(100);
    let failover_path = m.path_of("failover");
    let failover = match m.node("failover") {
        None => Some(Vec::new()),
        Some(_) => m.strings("failover").and_then(|items| {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match parse_broker_addr(&item.value) {
                    Ok(addr) => out.push(addr),
                    Err(p) => {
                        let path = format!("{failover_path}[{i}]");
                        m.errors().push(item.pos, at_path(&path, &p));
                        ok = false;
                    }
                }
            }
            ok.then_some(out)
        }),
    };

    let tls = match m.node("tls") {
        None => Some(None),
        Some(_) => m
            .map("tls")
            .and_then(|mut t| crate::uplink::tls::decode(&mut t))
            .map(Some),
    };

    let replay_rate = m.int("replay_rate", 0..=1_000_000u32).unwrap_or(0);
    let live_max_delay = m
        .duration(
            "live_max_delay",
            Duration::from_millis(10)..=Duration::from_secs(3600),
        )
        .unwrap_or(secs(1));

    let password = password.ok()?;
    (username_ok && keepalive_ok && reconnect_ok).then_some(())?;
    Some(UplinkConfig {
        host: host.filter(|h| !h.is_empty())?,
        port,
        client_id: client_id?,
        username,
        password,
        keepalive,
        qos,
        forward: forward?,
        reconnect_min: reconnect_min.unwrap_or(secs(1)),
        reconnect_max: reconnect_max.unwrap_or(secs(60)),
        max_inflight,
        failover: failover?,
        tls: tls?,
        replay_rate,
        live_max_delay,
    })
}

/// `uplink.forward`: a list of topic filters (at `uplink.qos`) or `{filter, qos}` mappings.
fn decode_routes(
    m: &mut MapReader,
    vars: Option<&[(&str, &str)]>,
    default_qos: u8,
) -> Option<Vec<Route>> {
    let path = m.path_of("forward");
    let Some(node) = m.node("forward") else {
        return Some(vec![Route {
            filter: vars.map(|v| expand(DEFAULT_FORWARD, v))?,
            qos: default_qos,
        }]);
    };
    let Value::Seq(items) = &node.value else {
        let msg = format!("expected a list, found {}", node.describe());
        m.errors().push(node.pos, at_path(&path, &msg));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let (filter, qos) = if let Value::Map(_) = item.value {
            let Some(mut r) = MapReader::new(item, item_path.clone(), item.pos, m.errors()) else {
                ok = false;
                continue;
            };
            r.require(&["filter"]);
            let filter = r.spanned_string("filter");
            let qos = r.int("qos", 1..=2u8).unwrap_or(default_qos);
            r.finish();
            match filter {
                Some(f) => (f, qos),
                None => {
                    ok = false;
                    continue;
                }
            }
        } else {
            match scalar_text(item, "a topic filter or a {filter, qos} mapping") {
                Ok((text, _)) if !item.is_null() => (
                    Spanned {
                        value: text.to_string(),
                        pos: item.pos,
                    },
                    default_qos,
                ),
                Ok(_) => {
                    let msg = "expected a topic filter, found nothing";
                    m.errors().push(item.pos, at_path(&item_path, msg));
                    ok = false;
                    continue;
                }
                Err(msg) => {
                    m.errors().push(item.pos, at_path(&item_path, &msg));
                    ok = false;
                    continue;
                }
            }
        };
        if let Some(p) = placeholder_problem(&filter.value, &["site", "gateway"]) {
            m.errors().push(filter.pos, at_path(&item_path, &p));
            ok = false;
            continue;
        }
        let Some(vars) = vars else {
            ok = false;
            continue;
        };
        let expanded = expand(&filter.value, vars);
        match filter_problem(&expanded) {
            Some(p) => {
                m.errors().push(filter.pos, at_path(&item_path, &p));
                ok = false;
            }
            None => out.push(Route {
                filter: expanded,
                qos,
            }),
        }
    }
    ok.then_some(out)
}

/// `host:port`, `host` (port 1883), or `[v6addr]:port`.
fn parse_broker_addr(s: &str) -> Result<(String, u16), String> {
    let bad_port = |p: &str| format!("`{p}` in `{s}` is not a port (1 to 65535)");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: `[` without `]`"))?;
        match tail.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if tail.is_empty() => (h, None),
            None => return Err(format!("`{s}`: expected `:port` after `]`")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!(
            "`{s}` is not a broker address (expected host:port)"
        ));
    }
    let port = match port {
        None => 1883,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| bad_port(p))?,
    };
    Ok((host.to_string(), port))
}

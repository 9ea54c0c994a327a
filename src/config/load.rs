//! The site config schema: decoding and validation of a whole file.
//!
//! Every section is decoded even when an earlier one failed, so one run reports every problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decode::{at_path, closest, scalar_text, Errors, MapReader, Spanned};
use super::yaml::{self, Node, Pos, Value};
use super::{
    expand, BrokerConfig, BufferConfig, Config, ConfigError, DeviceConfig, PointConfig, Route,
    Topics, UplinkConfig,
};
use crate::adapters::AdapterConfig;

const DEFAULT_READING_TOPIC: &str = "{site}/{gateway}/{device}/{quantity}";
const DEFAULT_STATUS_TOPIC: &str = "{site}/{gateway}/status";
const DEFAULT_DEVICE_STATUS_TOPIC: &str = "{site}/{gateway}/{device}/status";
const DEFAULT_CLIENT_ID: &str = "{site}-{gateway}";
const DEFAULT_FORWARD: &str = "{site}/{gateway}/#";

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Loads and validates a site config file. Errors name the file as `path` was given.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        vec![ConfigError {
            file: file.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read config file: {e}"),
        }]
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => load_str(&text, &file),
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            // `good` is valid UTF-8 by construction; lossy conversion cannot change it.
            let good = String::from_utf8_lossy(good);
            let line = good.matches('\n').count() + 1;
            let col = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Err(vec![ConfigError {
                file,
                line,
                col,
                message: "the file is not valid UTF-8".to_string(),
            }])
        }
    }
}

/// Loads and validates a site config from text; `file` is used in error messages.
pub fn load_str(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    let doc = yaml::parse(text).map_err(|p| {
        vec![ConfigError {
            file: file.to_string(),
            line: p.pos.line,
            col: p.pos.col,
            message: p.message,
        }]
    })?;
    let mut errs = Errors::new();
    errs.extend(doc.problems);
    let empty = Node {
        pos: Pos::new(1, 1),
        value: Value::Map(Vec::new()),
    };
    let root = doc.root.as_ref().unwrap_or(&empty);
    let config = decode_config(root, &mut errs).map(|c| Config {
        digest: digest(text),
        ..c
    });
    match config {
        Some(config) if errs.is_empty() => Ok(config),
        _ if !errs.is_empty() => Err(errs.into_config_errors(file)),
        _ => Err(vec![ConfigError {
            file: file.to_string(),
            line: 1,
            col: 1,
            message: "internal error: config rejected without a reason".to_string(),
        }]),
    }
}

fn decode_config(root: &Node, errs: &mut Errors) -> Option<Config> {
    let mut m = MapReader::new(root, "", root.pos, errs)?;
    m.require(&["site", "gateway"]);
    let site = id(&mut m, "site");
    let gateway = id(&mut m, "gateway");
    let names = site.as_deref().zip(gateway.as_deref());

    let topics = m.section("topics").and_then(|mut t| decode_topics(&mut t));
    let broker = m.section("broker").and_then(|mut b| decode_broker(&mut b));
    let uplink = match m.map("uplink") {
        Some(mut u) => decode_uplink(&mut u, names).map(Some),
        None => Some(None),
    };
    let buffer = m.section("buffer").and_then(|mut b| decode_buffer(&mut b));
    let health = match m.map("health") {
        Some(mut h) => crate::health::config::decode(&mut h).map(Some),
        None => Some(None),
    };
    let mqttsn = match m.map("mqttsn") {
        Some(mut s) => crate::mqttsn::config::decode(&mut s).map(Some),
        None => Some(None),
    };
    let mut devices = Vec::new();
    let mut devices_ok = true;
    if let Some(mut d) = m.map("devices") {
        d.for_each_map(|id, dev| match decode_device(id, dev) {
            Some(device) => devices.push(device),
            None => devices_ok = false,
        });
    }
    m.finish();
    AdapterConfig::check_devices(&devices, errs);

    Some(Config {
        site: site?,
        gateway: gateway?,
        topics: topics?,
        broker: broker?,
        uplink: uplink?,
        buffer: buffer?,
        health: health?,
        mqttsn: mqttsn?,
        devices: devices_ok.then_some(devices)?,
        digest: String::new(),
    })
}

fn digest(text: &str) -> String {
    use sha2::Digest;
    let sum = sha2::Sha256::digest(text.as_bytes());
    sum.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `[A-Za-z0-9_-]{1,64}`: site, gateway and device ids end up in topics and file names.
fn id_problem(s: &str) -> Option<String> {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let len = s.chars().count();
    if ok_chars && (1..=64).contains(&len) {
        None
    } else if !ok_chars {
        Some(format!(
            "`{s}` is not a valid id: use only letters, digits, `_` and `-` (1 to 64 characters)"
        ))
    } else {
        Some(format!(
            "`{s}` is not a valid id: it must be 1 to 64 characters long"
        ))
    }
}

fn id(m: &mut MapReader, key: &str) -> Option<String> {
    let s = m.string(key)?;
    match id_problem(&s) {
        None => Some(s),
        Some(problem) => {
            m.error(key, problem);
            None
        }
    }
}

/// Checks a template's `{placeholders}` against `allowed`.
fn placeholder_problem(template: &str, allowed: &[&str]) -> Option<String> {
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        if rest[i..].starts_with('}') {
            return Some(format!("`}}` without a matching `{{` in `{template}`"));
        }
        let after = &rest[i + 1..];
        let Some(end) = after.find('}') else {
            return Some(format!("`{{` without a closing `}}` in `{template}`"));
        };
        let name = &after[..end];
        if !allowed.contains(&name) {
            let list = allowed
                .iter()
                .map(|a| format!("{{{a}}}"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = closest(name, allowed.iter().copied())
                .map(|c| format!("; did you mean `{{{c}}}`?"))
                .unwrap_or_default();
            return Some(format!(
                "reference to undefined placeholder `{{{name}}}`{hint} (defined here: {list})"
            ));
        }
        rest = &after[end + 1..];
    }
    None
}

/// `required`: placeholders without which two devices or quantities would share one topic.
fn topic_template(
    m: &mut MapReader,
    key: &str,
    allowed: &[&str],
    required: &[&str],
    default: &str,
) -> Option<String> {
    if m.node(key).is_none() {
        return Some(default.to_string());
    }
    let t = m.string(key)?;
    let problem = if t.is_empty() {
        Some("a topic template must not be empty".to_string())
    } else if t.contains(['+', '#']) {
        Some(format!(
            "`{t}` contains a wildcard (`+` or `#`); a topic to publish to must not"
        ))
    } else if t.contains('\0') {
        Some("a topic must not contain NUL".to_string())
    } else if let Some(p) = placeholder_problem(&t, allowed) {
        Some(p)
    } else {
        let missing: Vec<String> = required
            .iter()
            .filter(|r| !t.contains(&format!("{{{r}}}")))
            .map(|r| format!("{{{r}}}"))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "`{t}` lacks {}: without it different sensors would publish to the same topic",
                missing.join(" and ")
            )
        })
    };
    match problem {
        None => Some(t),
        Some(p) => {
            m.error(key, p);
            None
        }
    }
}

fn decode_topics(m: &mut MapReader) -> Option<Topics> {
    let reading = topic_template(
        m,
        "reading",
        &["site", "gateway", "device", "quantity"],
        &["device", "quantity"],
        DEFAULT_READING_TOPIC,
    );
    let status = topic_template(m, "status", &["site", "gateway"], &[], DEFAULT_STATUS_TOPIC);
    let device_status = topic_template(
        m,
        "device_status",
        &["site", "gateway", "device"],
        &["device"],
        DEFAULT_DEVICE_STATUS_TOPIC,
    );
    Some(Topics {
        reading: reading?,
        status: status?,
        device_status: device_status?,
    })
}

fn decode_broker(m: &mut MapReader) -> Option<BrokerConfig> {
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
            .and_then(|mut t| crate::bus::tls::decode(&mut t))
            .map(Some),
    };
    // Client certificates name users that have no password.
    let cert_users = matches!(&tls, Some(Some(t)) if t.identity_as_username);
    let auth = m
        .section("auth")
        .and_then(|mut a| crate::bus::config::decode_auth(&mut a, cert_users));
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

/// Enough for days of a busy site, small beside any SD card the gateway runs from.
const DEFAULT_BUFFER_MAX_BYTES: u64 = 512 * 1024 * 1024;
const DEFAULT_BUFFER_MAX_ROWS: u64 = 5_000_000;

fn decode_buffer(m: &mut MapReader) -> Option<BufferConfig> {
    let dir = match m.node("dir") {
        None => Some("data".to_string()),
        Some(_) => m.string("dir"),
    };
    if dir.as_deref() == Some("") {
        m.error("dir", "must not be empty");
    }
    let commit_interval = m
        .duration("commit_interval", ms(1)..=secs(10))
        .unwrap_or(ms(200));
    let retained_flush = m
        .duration("retained_flush", Duration::ZERO..=secs(3600))
        .unwrap_or(secs(60));
    let max_bytes = m
        .size("max_bytes", 64 * 1024..=1024 * 1024 * 1024 * 1024)
        .unwrap_or(DEFAULT_BUFFER_MAX_BYTES);
    let max_rows = m
        .int("max_rows", 100..=1_000_000_000u64)
        .unwrap_or(DEFAULT_BUFFER_MAX_ROWS);
    let max_age = m.duration("max_age", secs(60)..=secs(3650 * 86_400));
    Some(BufferConfig {
        dir: PathBuf::from(dir.filter(|d| !d.is_empty())?),
        commit_interval,
        retained_flush,
        max_bytes,
        max_rows,
        max_age,
    })
}

fn decode_device(id: Spanned<&str>, dev: &mut MapReader) -> Option<DeviceConfig> {
    let id_ok = match id_problem(id.value) {
        None => true,
        Some(p) => {
            let msg = at_path("devices", &p.replace("valid id", "valid device id"));
            dev.errors().push(id.pos, msg);
            false
        }
    };

    let mut adapter: Option<AdapterConfig> = None;
    let mut chosen: Option<&str> = None;
    for &kind in AdapterConfig::KINDS {
        if !dev.has(kind) {
            continue;
        }
        if let Some(first) = chosen {
            dev.key_error(
                kind,
                format!(
                    "device `{}` already has adapter `{first}`; a device has exactly one",
                    id.value
                ),
            );
            continue;
        }
        chosen = Some(kind);
        if let Some(mut section) = dev.map(kind) {
            adapter = AdapterConfig::decode(kind, &mut section);
        }
    }
    if chosen.is_none() {
        let msg = at_path(
            dev.path(),
            &format!(
                "no adapter configured; add one of: {}",
                AdapterConfig::KINDS.join(", ")
            ),
        );
        let pos = dev.pos();
        dev.errors().push(pos, msg);
    }

    let quantities = adapter.as_ref().map(AdapterConfig::quantities);
    let mut points = BTreeMap::new();
    let mut points_ok = true;
    if let Some(mut pm) = dev.map("points") {
        pm.for_each_map(|quantity, p| {
            if let Some(qs) = &quantities {
                if !qs.iter().any(|(q, _)| *q == quantity.value) {
                    let produced: Vec<&str> = qs.iter().map(|(q, _)| *q).collect();
                    let msg = at_path(
                        p.path(),
                        &format!(
                            "device `{}` has no quantity `{}` (it produces: {})",
                            id.value,
                            quantity.value,
                            produced.join(", ")
                        ),
                    );
                    p.errors().push(quantity.pos, msg);
                    points_ok = false;
                }
            }
            match decode_point(p) {
                Some(point) => {
                    points.insert(quantity.value.to_string(), point);
                }
                None => points_ok = false,
            }
        });
    }

    (id_ok && points_ok).then_some(())?;
    Some(DeviceConfig {
        id: id.value.to_string(),
        adapter: adapter?,
        points,
    })
}

fn decode_point(m: &mut MapReader) -> Option<PointConfig> {
    let any = f64::MIN..=f64::MAX;
    let unit = m.string("unit");
    let unit_ok = unit.is_some() || m.node("unit").is_none();
    let scale = m.float("scale", any.clone());
    if scale == Some(0.0) {
        m.error("scale", "must not be 0");
    }
    let offset = m.float("offset", any.clone());
    let valid_min = m.float("valid_min", any.clone());
    let valid_max = m.float("valid_max", any);
    if let (Some(lo), Some(hi)) = (valid_min, valid_max) {
        if lo >= hi {
            m.error(
                "valid_max",
                format!("must be greater than valid_min ({lo}), got {hi}"),
            );
        }
    }
    let alarm_low = m.float("alarm_low", f64::MIN..=f64::MAX);
    let alarm_high = m.float("alarm_high", f64::MIN..=f64::MAX);
    if let (Some(lo), Some(hi)) = (alarm_low, alarm_high) {
        if lo >= hi {
            m.error(
                "alarm_high",
                format!("must be greater than alarm_low ({lo}), got {hi}"),
            );
        }
    }
    let deadband = m.float("deadband", 0.0..=f64::INFINITY);
    let heartbeat = m.duration("heartbeat", secs(1)..=Duration::MAX);
    let decimals = m.int("decimals", 0..=9u8);
    let ok = unit_ok
        && scale != Some(0.0)
        && valid_min.zip(valid_max).is_none_or(|(lo, hi)| lo < hi)
        && alarm_low.zip(alarm_high).is_none_or(|(lo, hi)| lo < hi);
    ok.then_some(())?;
    let d = PointConfig::default();
    Some(PointConfig {
        unit,
        scale: scale.unwrap_or(d.scale),
        offset: offset.unwrap_or(d.offset),
        valid_min,
        valid_max,
        alarm_low,
        alarm_high,
        deadband: deadband.unwrap_or(d.deadband),
        heartbeat,
        decimals,
    })
}

mod uplink;

use uplink::decode_uplink;

#[cfg(test)]
mod tests;

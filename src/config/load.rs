//! The site config schema: decoding and validation of a whole file.
//!
//! Every section is decoded even when an earlier one failed, so one run reports every problem.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decode::{at_path, closest, Errors, MapReader, Spanned};
use super::yaml::{self, Node, Pos, Value};
use super::{
    expand, BrokerConfig, BufferConfig, Config, ConfigError, DeviceConfig, PointConfig, Topics,
    UplinkConfig,
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
    let config = decode_config(root, &mut errs);
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
    let mut devices = Vec::new();
    let mut devices_ok = true;
    if let Some(mut d) = m.map("devices") {
        d.for_each_map(|id, dev| match decode_device(id, dev) {
            Some(device) => devices.push(device),
            None => devices_ok = false,
        });
    }
    m.finish();

    Some(Config {
        site: site?,
        gateway: gateway?,
        topics: topics?,
        broker: broker?,
        uplink: uplink?,
        buffer: buffer?,
        devices: devices_ok.then_some(devices)?,
    })
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

fn topic_template(m: &mut MapReader, key: &str, allowed: &[&str], default: &str) -> Option<String> {
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
    } else {
        placeholder_problem(&t, allowed)
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
        DEFAULT_READING_TOPIC,
    );
    let status = topic_template(m, "status", &["site", "gateway"], DEFAULT_STATUS_TOPIC);
    let device_status = topic_template(
        m,
        "device_status",
        &["site", "gateway", "device"],
        DEFAULT_DEVICE_STATUS_TOPIC,
    );
    Some(Topics {
        reading: reading?,
        status: status?,
        device_status: device_status?,
    })
}

fn decode_broker(m: &mut MapReader) -> Option<BrokerConfig> {
    let default_listen = SocketAddr::from(([0, 0, 0, 0], 1883));
    let listen = m.socket_addr("listen");
    let listen_ok = listen.is_some() || m.node("listen").is_none();
    let max_connections = m.int("max_connections", 1..=100_000usize).unwrap_or(1000);
    let max_packet_size = m
        .size("max_packet_size", 64..=256 << 20)
        .unwrap_or(256 << 10);
    let max_queued_messages = m
        .int("max_queued_messages", 1..=1_000_000usize)
        .unwrap_or(1000);
    listen_ok.then_some(())?;
    Some(BrokerConfig {
        listen: listen.unwrap_or(default_listen),
        max_connections,
        // At most 256MiB: fits any usize this runs on.
        max_packet_size: usize::try_from(max_packet_size).unwrap_or(usize::MAX),
        max_queued_messages,
    })
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

fn decode_uplink(m: &mut MapReader, names: Option<(&str, &str)>) -> Option<UplinkConfig> {
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
                    super::units::format_duration(k)
                ),
            );
        }
    }
    let keepalive_ok = keepalive.is_none_or(|k| k.subsec_nanos() == 0);
    let keepalive = keepalive.unwrap_or(secs(30));
    let qos = m.int("qos", 1..=2u8).unwrap_or(1);

    let forward = match m.node("forward") {
        None => Some(vec![Spanned {
            value: DEFAULT_FORWARD.to_string(),
            pos: m.pos(),
        }]),
        Some(_) => m.strings("forward"),
    };
    let forward_path = m.path_of("forward");
    let forward = forward.and_then(|filters| {
        let mut out = Vec::with_capacity(filters.len());
        let mut ok = true;
        for (i, f) in filters.iter().enumerate() {
            let item = format!("{forward_path}[{i}]");
            if let Some(p) = placeholder_problem(&f.value, &["site", "gateway"]) {
                m.errors().push(f.pos, at_path(&item, &p));
                ok = false;
                continue;
            }
            let Some(vars) = vars else {
                ok = false;
                continue;
            };
            let filter = expand(&f.value, &vars);
            match filter_problem(&filter) {
                Some(p) => {
                    m.errors().push(f.pos, at_path(&item, &p));
                    ok = false;
                }
                None => out.push(filter),
            }
        }
        ok.then_some(out)
    });

    let reconnect_min = m.duration("reconnect_min", ms(10)..=secs(3600));
    let reconnect_max = m.duration("reconnect_max", Duration::ZERO..=secs(86_400));
    let min_for_check = reconnect_min.or(m.node("reconnect_min").is_none().then_some(secs(1)));
    let mut reconnect_ok = true;
    if let (Some(lo), Some(hi)) = (min_for_check, reconnect_max.or(Some(secs(60)))) {
        if hi < lo {
            let f = super::units::format_duration;
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
    })
}

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
    Some(BufferConfig {
        dir: PathBuf::from(dir.filter(|d| !d.is_empty())?),
        commit_interval,
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
    let deadband = m.float("deadband", 0.0..=f64::INFINITY);
    let heartbeat = m.duration("heartbeat", secs(1)..=Duration::MAX);
    let decimals = m.int("decimals", 0..=9u8);
    let ok =
        unit_ok && scale != Some(0.0) && valid_min.zip(valid_max).is_none_or(|(lo, hi)| lo < hi);
    ok.then_some(())?;
    let d = PointConfig::default();
    Some(PointConfig {
        unit,
        scale: scale.unwrap_or(d.scale),
        offset: offset.unwrap_or(d.offset),
        valid_min,
        valid_max,
        deadband: deadband.unwrap_or(d.deadband),
        heartbeat,
        decimals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::sim::{Signal, SimConfig};

    /// Every error of `text`, displayed as `site.yaml:LINE:COL: message`.
    fn errors(text: &str) -> Vec<String> {
        match load_str(text, "site.yaml") {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    fn ok(text: &str) -> Config {
        match load_str(text, "site.yaml") {
            Ok(c) => c,
            Err(errs) => panic!("unexpected errors: {errs:#?}"),
        }
    }

    const MINIMAL: &str = "site: s1\ngateway: g1\n";

    #[test]
    fn full_config_decodes_with_defaults_and_expansion() {
        let text = r#"
site: tankfarm
gateway: gw01
topics:
  reading: "plant/{site}/{gateway}/{device}/{quantity}"
broker:
  listen: "[::1]:1884"
  max_packet_size: 1MiB
uplink:
  host: cloud.example.com
  port: 8883
  username: user
  password: secret
  keepalive: 1m
  qos: 2
  forward: ["{site}/{gateway}/#", "cmd/+/x"]
  reconnect_min: 500ms
  reconnect_max: 2m
buffer:
  commit_interval: 50ms
devices:
  coldroom-1:
    sim:
      kind: temperature
      mean: 4
      amplitude: 1.5
    points:
      temperature:
        unit: degC
        scale: 1.0
        offset: -0.5
        valid_min: -40
        valid_max: 85
        deadband: 0.05
        heartbeat: 60s
        decimals: 2
  tank_a:
    sim: {kind: level, interval: 250ms, min: 5, max: 95, fill_time: 1h, drain_time: 2h}
"#;
        let c = ok(text);
        let want = Config {
            site: "tankfarm".into(),
            gateway: "gw01".into(),
            topics: Topics {
                reading: "plant/{site}/{gateway}/{device}/{quantity}".into(),
                status: "{site}/{gateway}/status".into(),
                device_status: "{site}/{gateway}/{device}/status".into(),
            },
            broker: BrokerConfig {
                listen: "[::1]:1884".parse().unwrap(),
                max_connections: 1000,
                max_packet_size: 1 << 20,
                max_queued_messages: 1000,
            },
            uplink: Some(UplinkConfig {
                host: "cloud.example.com".into(),
                port: 8883,
                client_id: "tankfarm-gw01".into(),
                username: Some("user".into()),
                password: Some("secret".into()),
                keepalive: secs(60),
                qos: 2,
                forward: vec!["tankfarm/gw01/#".into(), "cmd/+/x".into()],
                reconnect_min: ms(500),
                reconnect_max: secs(120),
                max_inflight: 100,
            }),
            buffer: BufferConfig {
                dir: PathBuf::from("data"),
                commit_interval: ms(50),
            },
            devices: vec![
                DeviceConfig {
                    id: "coldroom-1".into(),
                    adapter: AdapterConfig::Sim(SimConfig {
                        interval: secs(1),
                        signal: Signal::Temperature {
                            mean: 4.0,
                            amplitude: 1.5,
                            noise: 0.1,
                            period: secs(86_400),
                        },
                    }),
                    points: BTreeMap::from([(
                        "temperature".to_string(),
                        PointConfig {
                            unit: Some("degC".into()),
                            scale: 1.0,
                            offset: -0.5,
                            valid_min: Some(-40.0),
                            valid_max: Some(85.0),
                            deadband: 0.05,
                            heartbeat: Some(secs(60)),
                            decimals: Some(2),
                        },
                    )]),
                },
                DeviceConfig {
                    id: "tank_a".into(),
                    adapter: AdapterConfig::Sim(SimConfig {
                        interval: ms(250),
                        signal: Signal::Level {
                            min: 5.0,
                            max: 95.0,
                            fill_time: secs(3600),
                            drain_time: secs(7200),
                            noise: 0.2,
                        },
                    }),
                    points: BTreeMap::new(),
                },
            ],
        };
        assert_eq!(c, want);
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = ok(MINIMAL);
        assert_eq!(c.topics.reading, "{site}/{gateway}/{device}/{quantity}");
        assert_eq!(c.broker.listen, "0.0.0.0:1883".parse().unwrap());
        assert_eq!(c.broker.max_packet_size, 256 * 1024);
        assert_eq!(c.broker.max_connections, 1000);
        assert_eq!(c.broker.max_queued_messages, 1000);
        assert_eq!(c.uplink, None);
        assert_eq!(c.buffer.dir, PathBuf::from("data"));
        assert_eq!(c.buffer.commit_interval, ms(200));
        assert!(c.devices.is_empty());
        assert!(ok(&format!("{MINIMAL}devices: {{}}\n")).devices.is_empty());
        assert!(ok(&format!("{MINIMAL}devices:\n")).devices.is_empty());

        let c = ok(&format!("{MINIMAL}uplink:\n  host: h\n"));
        let u = c.uplink.unwrap();
        assert_eq!((u.port, u.qos, u.max_inflight), (1883, 1, 100));
        assert_eq!(u.client_id, "s1-g1");
        assert_eq!(u.forward, vec!["s1/g1/#".to_string()]);
        assert_eq!(
            (u.keepalive, u.reconnect_min, u.reconnect_max),
            (secs(30), secs(1), secs(60))
        );
        assert_eq!((u.username, u.password), (None, None));

        let c = ok(&format!(
            "{MINIMAL}devices:\n  t:\n    sim: {{kind: level}}\n"
        ));
        let want = AdapterConfig::Sim(SimConfig {
            interval: secs(1),
            signal: Signal::Level {
                min: 10.0,
                max: 90.0,
                fill_time: secs(600),
                drain_time: secs(600),
                noise: 0.2,
            },
        });
        assert_eq!(c.devices[0].adapter, want);
    }

    #[test]
    fn misspelled_duplicate_and_bad_duration_are_all_reported_in_line_order() {
        let text = "\
site: demo
gateway: gw01
buffer:
  dir: data
  commit_interval: fast
  dir: other
brokr:
  listen: 127.0.0.1:1883
";
        let errs = load_str(text, "site.yaml").unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{shown:#?}");
        assert_eq!((errs[0].line, errs[0].col), (5, 20));
        assert!(
            errs[0]
                .message
                .starts_with("buffer.commit_interval: invalid duration `fast`"),
            "{}",
            errs[0]
        );
        assert_eq!(
            shown[1],
            "site.yaml:6:3: buffer: duplicate key `dir` (first at line 4)"
        );
        assert_eq!(
            shown[2],
            "site.yaml:7:1: unknown key `brokr`; did you mean `broker`?"
        );
    }

    #[test]
    fn unknown_key_without_a_near_miss_lists_the_valid_keys() {
        let errs = errors(&format!("{MINIMAL}buffer:\n  colour: red\n"));
        assert_eq!(
            errs,
            vec!["site.yaml:4:3: buffer: unknown key `colour` (valid keys: dir, commit_interval)"]
        );
    }

    #[test]
    fn missing_required_keys_point_at_the_parent_key() {
        let errs = errors("topics: {}\nuplink:\n  port: 1\n");
        assert_eq!(
            errs,
            vec![
                "site.yaml:1:1: missing required key `site`",
                "site.yaml:1:1: missing required key `gateway`",
                "site.yaml:2:1: uplink: missing required key `host`",
            ]
        );
        // An empty file has no site either.
        assert_eq!(errors("").len(), 2);
        assert_eq!(errors("# nothing yet\n").len(), 2);
    }

    #[test]
    fn errors_are_sorted_by_position_whatever_order_they_are_found_in() {
        // Unknown keys are found last (when a section is finished) but sort by line.
        let text = "colour: red\nsite: s\ngateway: g\nbuffer: {commit_interval: x, depth: 3}\n";
        let errs = load_str(text, "site.yaml").unwrap_err();
        let lines: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.col)).collect();
        assert_eq!(lines, vec![(1, 1), (4, 27), (4, 30)]);
        assert!(
            errs[0].message.starts_with("unknown key `colour`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn nulls_aliases_and_duplicate_devices() {
        // `uplink:` with nothing under it asks for an uplink without a host.
        let errs = errors(&format!("{MINIMAL}uplink:\n"));
        assert_eq!(
            errs,
            vec!["site.yaml:3:1: uplink: missing required key `host`"]
        );
        // reconnect_min above the default reconnect_max is blamed on reconnect_min.
        let errs = errors(&format!(
            "{MINIMAL}uplink:\n  host: h\n  reconnect_min: 2m\n"
        ));
        assert_eq!(
            errs,
            vec!["site.yaml:5:18: uplink.reconnect_min: must be at most reconnect_max (1m, the default), got 2m"]
        );
        // Anchors and aliases work; a device id given twice is a duplicate key.
        let text = format!(
            "{MINIMAL}devices:\n  a: &tank {{sim: {{kind: level}}}}\n  b: *tank\n  a: {{sim: {{kind: temperature}}}}\n"
        );
        let errs = errors(&text);
        assert_eq!(
            errs,
            vec!["site.yaml:6:3: devices: duplicate key `a` (first at line 4)"]
        );
        let c = ok(&format!(
            "{MINIMAL}devices:\n  a: &tank {{sim: {{kind: level}}}}\n  b: *tank\n"
        ));
        let ids: Vec<&str> = c.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(c.devices[0].adapter, c.devices[1].adapter);
    }

    #[test]
    fn wrong_types_are_reported_at_the_value() {
        let text = "\
site: [a, b]
gateway: gw01
broker:
  max_connections: many
  listen: localhost:1883
  max_queued_messages: \"10\"
uplink: yes
buffer:
  commit_interval: 5
devices:
  d1: 5
  d2:
    sim: [kind, level]
";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec![
                "site.yaml:1:7: site: expected a string, found a list",
                "site.yaml:4:20: broker.max_connections: expected an integer, found `many`",
                "site.yaml:5:11: broker.listen: `localhost:1883` is not an IP address with a port; e.g. 0.0.0.0:1883, 127.0.0.1:1883, \"[::1]:1883\"",
                "site.yaml:6:24: broker.max_queued_messages: expected an integer, found the string \"10\" (remove the quotes)",
                "site.yaml:7:9: uplink: expected a mapping, found `yes`",
                "site.yaml:9:20: buffer.commit_interval: duration `5` has no unit; write e.g. `5s` or `5ms` (units: d, h, m, s, ms)",
                "site.yaml:11:7: devices.d1: expected a mapping, found `5`",
                "site.yaml:13:10: devices.d2.sim: expected a mapping, found a list",
            ]
        );
    }

    #[test]
    fn out_of_range_values_are_reported() {
        let text = "\
site: s
gateway: g
broker:
  max_connections: 0
  max_packet_size: 32
uplink:
  host: h
  port: 70000
  qos: 3
  keepalive: 1500ms
  reconnect_min: 5s
  reconnect_max: 2s
  max_inflight: 0
buffer:
  commit_interval: 11s
devices:
  t1:
    sim: {kind: temperature, interval: 5ms, amplitude: -1, period: 500ms}
  l1:
    sim: {kind: level, min: 80, max: 20, fill_time: 0s}
    points:
      level: {scale: 0, valid_min: 10, valid_max: 5, decimals: 12, deadband: -1, heartbeat: 10ms}
  l2:
    sim: {kind: level, min: 95}
";
        let errs = errors(text);
        let want = [
            "site.yaml:4:20: broker.max_connections: must be between 1 and 100000, got 0",
            "site.yaml:5:20: broker.max_packet_size: must be between 64 B and 256MiB, got 32 B",
            "site.yaml:8:9: uplink.port: must be between 1 and 65535, got 70000",
            "site.yaml:9:8: uplink.qos: must be between 1 and 2, got 3",
            "site.yaml:10:14: uplink.keepalive: must be whole seconds, got 1s500ms",
            "site.yaml:12:18: uplink.reconnect_max: must be at least reconnect_min (5s), got 2s",
            "site.yaml:13:17: uplink.max_inflight: must be between 1 and 65535, got 0",
            "site.yaml:15:20: buffer.commit_interval: must be between 1ms and 10s, got 11s",
            "site.yaml:18:40: devices.t1.sim.interval: must be between 10ms and 1d, got 5ms",
            "site.yaml:18:56: devices.t1.sim.amplitude: must be at least 0, got -1",
            "site.yaml:18:68: devices.t1.sim.period: must be at least 1s, got 500ms",
            "site.yaml:20:38: devices.l1.sim.max: must be greater than min (80), got 20",
            "site.yaml:20:53: devices.l1.sim.fill_time: must be at least 1s, got 0s",
            "site.yaml:22:22: devices.l1.points.level.scale: must not be 0",
            "site.yaml:22:51: devices.l1.points.level.valid_max: must be greater than valid_min (10), got 5",
            "site.yaml:22:64: devices.l1.points.level.decimals: must be between 0 and 9, got 12",
            "site.yaml:22:78: devices.l1.points.level.deadband: must be at least 0, got -1",
            "site.yaml:22:93: devices.l1.points.level.heartbeat: must be at least 1s, got 10ms",
            "site.yaml:24:29: devices.l2.sim.min: must be less than max (90, the default), got 95",
        ];
        assert_eq!(errs, want);
    }

    #[test]
    fn unknown_placeholders_are_undefined_references() {
        let text = "\
site: s
gateway: g
topics:
  reading: \"{site}/{devcie}/{quantity}\"
  status: \"{site}/{gateway}/{device}/status\"
  device_status: \"{site}/{gateway\"
uplink:
  host: h
  client_id: \"{site}-{device}\"
  forward: [\"{site}/{gw}/#\", \"{site}/ok/#\"]
";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec![
                "site.yaml:4:12: topics.reading: reference to undefined placeholder `{devcie}`; did you mean `{device}`? (defined here: {site}, {gateway}, {device}, {quantity})",
                "site.yaml:5:11: topics.status: reference to undefined placeholder `{device}` (defined here: {site}, {gateway})",
                "site.yaml:6:18: topics.device_status: `{` without a closing `}` in `{site}/{gateway`",
                "site.yaml:9:14: uplink.client_id: reference to undefined placeholder `{device}` (defined here: {site}, {gateway})",
                "site.yaml:10:13: uplink.forward[0]: reference to undefined placeholder `{gw}` (defined here: {site}, {gateway})",
            ]
        );
    }

    #[test]
    fn topics_and_filters_are_validated() {
        let text = "\
site: s
gateway: g
topics:
  reading: \"\"
  status: \"{site}/+/status\"
uplink:
  host: \"\"
  client_id: \"{site}-{gateway}-0123456789012345678901234567890123456789012345678901234567890\"
  forward: [\"a/#/b\", \"a+/b\", \"\", \"+/x/#\", 5]
";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec![
                "site.yaml:4:12: topics.reading: a topic template must not be empty",
                "site.yaml:5:11: topics.status: `{site}/+/status` contains a wildcard (`+` or `#`); a topic to publish to must not",
                "site.yaml:7:9: uplink.host: must not be empty",
                "site.yaml:8:14: uplink.client_id: `s-g-0123456789012345678901234567890123456789012345678901234567890` must be 1 to 64 characters long, got 65",
                "site.yaml:9:13: uplink.forward[0]: `a/#/b` is not a valid topic filter: `#` must be the whole last level (e.g. a/b/#)",
                "site.yaml:9:22: uplink.forward[1]: `a+/b` is not a valid topic filter: `+` must be a whole level (e.g. a/+/c)",
                "site.yaml:9:30: uplink.forward[2]: a topic filter must not be empty",
            ]
        );
    }

    #[test]
    fn ids_are_validated() {
        let text =
            "site: tank farm\ngateway: gw/01\ndevices:\n  cold room:\n    sim: {kind: level}\n";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec![
                "site.yaml:1:7: site: `tank farm` is not a valid id: use only letters, digits, `_` and `-` (1 to 64 characters)",
                "site.yaml:2:10: gateway: `gw/01` is not a valid id: use only letters, digits, `_` and `-` (1 to 64 characters)",
                "site.yaml:4:3: devices: `cold room` is not a valid device id: use only letters, digits, `_` and `-` (1 to 64 characters)",
            ]
        );
        let long = "x".repeat(65);
        assert!(
            errors(&format!("site: {long}\ngateway: g\n"))[0].contains("1 to 64 characters long")
        );
    }

    #[test]
    fn quantity_not_produced_names_the_device_and_what_it_produces() {
        let text = "\
site: s
gateway: g
devices:
  coldroom-1:
    sim: {kind: temperature}
    points:
      temprature: {unit: degC}
      temperature: {unit: degF}
";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec!["site.yaml:7:7: devices.coldroom-1.points.temprature: device `coldroom-1` has no quantity `temprature` (it produces: temperature)"]
        );
    }

    #[test]
    fn adapters_are_exactly_one_per_device() {
        let text = "\
site: s
gateway: g
devices:
  d1:
    points: {}
  d2:
    simm: {kind: level}
  d3:
    sim:
  d4:
    sim: {kind: temp, mean: 3}
  d5:
    sim: {kind: level, mean: 3}
";
        let errs = errors(text);
        assert_eq!(
            errs,
            vec![
                "site.yaml:4:3: devices.d1: no adapter configured; add one of: sim",
                "site.yaml:6:3: devices.d2: no adapter configured; add one of: sim",
                "site.yaml:7:5: devices.d2: unknown key `simm`; did you mean `sim`?",
                "site.yaml:9:5: devices.d3.sim: missing required key `kind`",
                "site.yaml:11:17: devices.d4.sim.kind: `temp` is not one of: temperature, level",
                "site.yaml:13:24: devices.d5.sim: unknown key `mean` (valid keys: kind, interval, min, max, fill_time, drain_time, noise)",
            ]
        );
    }

    #[test]
    fn password_from_env_and_from_file() {
        std::env::set_var("EDGEGATE_TEST_PW_SET", "from-env");
        let c = ok(&format!(
            "{MINIMAL}uplink:\n  host: h\n  password_env: EDGEGATE_TEST_PW_SET\n"
        ));
        assert_eq!(c.uplink.unwrap().password.as_deref(), Some("from-env"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uplink.pass");
        std::fs::write(&path, "s3cret\n").unwrap();
        let c = ok(&format!(
            "{MINIMAL}uplink:\n  host: h\n  password_file: \"{}\"\n",
            path.display()
        ));
        assert_eq!(c.uplink.unwrap().password.as_deref(), Some("s3cret"));

        std::fs::write(&path, "with spaces  \r\n").unwrap();
        let c = ok(&format!(
            "{MINIMAL}uplink:\n  host: h\n  password_file: \"{}\"\n",
            path.display()
        ));
        assert_eq!(c.uplink.unwrap().password.as_deref(), Some("with spaces  "));
    }

    #[test]
    fn password_problems() {
        std::env::remove_var("EDGEGATE_TEST_PW_UNSET");
        let errs = errors(&format!(
            "{MINIMAL}uplink:\n  host: h\n  password_env: EDGEGATE_TEST_PW_UNSET\n"
        ));
        assert_eq!(
            errs,
            vec!["site.yaml:5:17: uplink.password_env: environment variable `EDGEGATE_TEST_PW_UNSET` is not set"]
        );

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pass");
        let errs = errors(&format!(
            "{MINIMAL}uplink:\n  host: h\n  password_file: \"{}\"\n",
            missing.display()
        ));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(&format!(
                "site.yaml:5:18: uplink.password_file: cannot read password file `{}`: ",
                missing.display()
            )),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains("os error 2"), "{}", errs[0]);

        let errs = errors(&format!(
            "{MINIMAL}uplink:\n  host: h\n  password: a\n  password_env: B\n  password_file: /c\n"
        ));
        assert_eq!(
            errs,
            vec![
                "site.yaml:6:3: uplink: `password_env` conflicts with `password`: set at most one of password, password_file, password_env",
                "site.yaml:7:3: uplink: `password_file` conflicts with `password`: set at most one of password, password_file, password_env",
            ]
        );
    }

    #[test]
    fn yaml_syntax_error_is_one_error_at_its_position() {
        let text = "site: s\ngateway: g\nbroker:\n  listen: [::1]:1883\n  max_connections: 5\n";
        let errs = load_str(text, "site.yaml").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].col), (4, 16));
        assert!(
            errs[0].message.starts_with("YAML syntax error: "),
            "{}",
            errs[0]
        );

        let errs = load_str("site: s\n  gateway: g\n", "x.yaml").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].col), (2, 10));
    }

    #[test]
    fn load_names_the_file_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.yaml");
        std::fs::write(&path, "site: s\ngateway: g\nbrokr: {}\n").unwrap();
        let errs = load(&path).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            format!(
                "{}:3:1: unknown key `brokr`; did you mean `broker`?",
                path.display()
            )
        );

        let missing = dir.path().join("missing.yaml");
        let errs = load(&missing).unwrap_err();
        assert_eq!(errs[0].file, missing.display().to_string());
        assert!(
            errs[0].message.starts_with("cannot read config file: "),
            "{}",
            errs[0]
        );

        std::fs::write(&path, b"site: s\ngateway: \xff\n").unwrap();
        let errs = load(&path).unwrap_err();
        assert_eq!((errs[0].line, errs[0].col), (2, 10));
        assert_eq!(errs[0].message, "the file is not valid UTF-8");

        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(load(&path).unwrap().site, "s1");
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "",
            "-",
            "5",
            "[]",
            "~",
            "site:",
            "site: {a: }",
            "devices: [a]",
            "devices:\n  d:\n    sim: {kind: level, min: ~}",
            "devices:\n  d:\n    sim: ~\n    points: [1]",
            "uplink: {host: h, forward: ~, client_id: ~, password: ~}",
            "uplink: {host: [h], forward: [[]], keepalive: [], reconnect_min: {}}",
            "site: &a s\ngateway: *a\ndevices: {x: &d {sim: {kind: level}}, y: *d}",
            "? a\n? b\n",
            "\u{feff}site: s",
            "\0",
            "site: \"\\u0000\"",
            "broker: {max_packet_size: 99999999999999999999999TiB}",
            "uplink: {host: h, port: -99999999999999999999999999999999999999999999}",
        ];
        for text in inputs {
            let _ = load_str(text, "x.yaml");
        }
        // Every prefix of a real config, too.
        let demo = DEMO_FOR_PREFIXES;
        for end in (0..demo.len()).filter(|i| demo.is_char_boundary(*i)) {
            let _ = load_str(&demo[..end], "x.yaml");
        }
    }

    const DEMO_FOR_PREFIXES: &str = "site: s\ngateway: g\nuplink:\n  host: h\n  forward: [\"{site}/#\"]\ndevices:\n  d:\n    sim: {kind: level}\n    points:\n      level: {unit: \"%\"}\n";

    #[test]
    fn demo_config_loads() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.yaml"));
        let c = match load(path) {
            Ok(c) => c,
            Err(errs) => panic!(
                "{}",
                errs.iter()
                    .map(|e| e.to_string() + "\n")
                    .collect::<String>()
            ),
        };
        assert_eq!((c.site.as_str(), c.gateway.as_str()), ("demo", "gw01"));
        assert_eq!(c.broker.listen, "127.0.0.1:1883".parse().unwrap());
        let u = c.uplink.as_ref().expect("demo has an uplink");
        assert_eq!(
            (u.host.as_str(), u.port, u.password.as_deref()),
            ("127.0.0.1", 1884, None)
        );
        assert_eq!(c.buffer.dir, PathBuf::from("data"));
        let count = |want: &str| {
            c.devices
                .iter()
                .filter(|d| d.adapter.quantities().iter().any(|(q, _)| *q == want))
                .count()
        };
        assert!(count("temperature") >= 3);
        assert!(count("level") >= 2);
        assert!(c.devices.iter().any(|d| !d.points.is_empty()));
    }
}

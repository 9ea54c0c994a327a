//! The `mqttsn:` config section.

use std::net::SocketAddr;
use std::time::Duration;

use crate::bus::topic;
use crate::config::decode::{at_path, MapReader};
use crate::config::yaml::Value;

/// What becomes of a PUBLISH whose topic matches a mapping's filter.
#[derive(Debug, Clone, PartialEq)]
pub enum MapTo {
    /// Onto the bus as it came, under `prefix` (may be empty).
    Bus { prefix: String },
    /// A reading: the device is the level the first `+` matched, the quantity the level the
    /// second `+` matched (or the last level); the payload is a number or JSON with `value`.
    Readings { unit: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub filter: String,
    pub to: MapTo,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttSnConfig {
    /// UDP addresses, IPv4 and/or IPv6.
    pub listen: Vec<SocketAddr>,
    pub gateway_id: u8,
    /// Where ADVERTISE goes (a broadcast, multicast or forwarder address), and how often.
    pub advertise: Option<(SocketAddr, Duration)>,
    /// (id, topic name), ids 1..=65534.
    pub predefined: Vec<(u16, String)>,
    pub max_clients: usize,
    /// Sessions per source IP address (every node behind one forwarder shares its address).
    pub max_clients_per_source: usize,
    /// How long a session outlives its client's last message once it is disconnected or lost
    /// (or connected with keepalive 0 and silent); then it is removed.
    pub session_expiry: Duration,
    /// Largest datagram accepted.
    pub max_message_size: usize,
    /// Messages per second per client (a burst of this many is allowed).
    pub max_rate: u32,
    /// Messages queued per client (sleeping, or waiting for an acknowledgement); past it the
    /// oldest is dropped and counted.
    pub max_buffered: usize,
    pub max_topics: usize,
    /// Tretry and Nretry of the spec.
    pub retry_interval: Duration,
    pub max_retries: u32,
    /// How often the counters are published on `{site}/{gateway}/mqttsn/stats` (when changed).
    pub stats_interval: Duration,
    /// First match decides; an unmatched topic goes onto the bus unchanged.
    pub mappings: Vec<Mapping>,
}

impl Default for MqttSnConfig {
    fn default() -> Self {
        MqttSnConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 1883))],
            gateway_id: 1,
            advertise: None,
            predefined: Vec::new(),
            max_clients: 20_000,
            max_clients_per_source: 1_000,
            session_expiry: Duration::from_secs(7 * 86_400),
            max_message_size: 1024,
            max_rate: 100,
            max_buffered: 100,
            max_topics: 256,
            retry_interval: Duration::from_secs(10),
            max_retries: 5,
            stats_interval: Duration::from_secs(10),
            mappings: Vec::new(),
        }
    }
}

pub(crate) fn decode(m: &mut MapReader) -> Option<MqttSnConfig> {
    let d = MqttSnConfig::default();
    let mut ok = true;
    let listen = match m.node("listen") {
        None => Some(d.listen.clone()),
        Some(n) if matches!(n.value, Value::Seq(_)) => m.strings("listen").and_then(|items| {
            let mut out = Vec::new();
            for s in items {
                match s.value.parse::<SocketAddr>() {
                    Ok(a) => out.push(a),
                    Err(_) => {
                        let msg = format!("`{}` is not an IP address with a port; e.g. 0.0.0.0:1883, \"[::]:1883\"", s.value);
                        let path = m.path_of("listen");
                        m.errors().push(s.pos, at_path(&path, &msg));
                        return None;
                    }
                }
            }
            if out.is_empty() {
                m.error("listen", "needs at least one address");
                return None;
            }
            Some(out)
        }),
        Some(_) => m.socket_addr("listen").map(|a| vec![a]),
    };
    ok &= listen.is_some();
    let mut get_int =
        |m: &mut MapReader, key: &str, range: std::ops::RangeInclusive<u64>, def: u64| {
            let present = m.node(key).is_some();
            let v = m.int(key, range);
            if present && v.is_none() {
                ok = false;
            }
            v.unwrap_or(def)
        };
    let gateway_id = get_int(m, "gateway_id", 0..=255, d.gateway_id as u64) as u8;
    let max_clients = get_int(m, "max_clients", 1..=1_000_000, d.max_clients as u64) as usize;
    let per_source = d.max_clients_per_source as u64;
    let max_clients_per_source =
        get_int(m, "max_clients_per_source", 1..=1_000_000, per_source) as usize;
    let max_rate = get_int(m, "max_rate", 1..=1_000_000, d.max_rate as u64) as u32;
    let max_buffered = get_int(m, "max_buffered", 1..=100_000, d.max_buffered as u64) as usize;
    let max_topics = get_int(m, "max_topics", 1..=65_000, d.max_topics as u64) as usize;
    let max_retries = get_int(m, "max_retries", 0..=100, d.max_retries as u64) as u32;
    let mut dur = |m: &mut MapReader, key: &str, lo: Duration, hi: Duration, def: Duration| {
        let present = m.node(key).is_some();
        let v = m.duration(key, lo..=hi);
        if present && v.is_none() {
            ok = false;
        }
        v.unwrap_or(def)
    };
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let retry_interval = dur(m, "retry_interval", ms(10), s(3600), d.retry_interval);
    let stats_interval = dur(m, "stats_interval", ms(100), s(86_400), d.stats_interval);
    let day = 86_400;
    let session_expiry = dur(m, "session_expiry", s(1), s(3650 * day), d.session_expiry);
    let max_message_size = match m.node("max_message_size") {
        None => d.max_message_size,
        Some(_) => match m.size("max_message_size", 16..=65_535) {
            Some(v) => v as usize,
            None => {
                ok = false;
                d.max_message_size
            }
        },
    };
    let advertise = match m.map("advertise") {
        None => None,
        Some(mut a) => {
            a.require(&["address"]);
            let addr = a.socket_addr("address");
            let interval = a
                .duration("interval", ms(100)..=s(65_535))
                .unwrap_or(s(900));
            a.finish();
            ok &= addr.is_some();
            addr.map(|addr| (addr, interval))
        }
    };
    let predefined = decode_predefined(m);
    ok &= predefined.is_some();
    let mappings = decode_mappings(m);
    ok &= mappings.is_some();
    ok.then_some(MqttSnConfig {
        listen: listen?,
        gateway_id,
        advertise,
        predefined: predefined?,
        max_clients,
        max_clients_per_source,
        session_expiry,
        max_message_size,
        max_rate,
        max_buffered,
        max_topics,
        retry_interval,
        max_retries,
        stats_interval,
        mappings: mappings?,
    })
}

/// Each item of the list under `key` as a mapping reader.
fn for_each_item(m: &mut MapReader, key: &str, mut f: impl FnMut(&mut MapReader) -> bool) -> bool {
    let path = m.path_of(key);
    let Some(node) = m.node(key) else {
        return true;
    };
    let Value::Seq(items) = &node.value else {
        let msg = format!("expected a list, found {}", node.describe());
        m.errors().push(node.pos, at_path(&path, &msg));
        return false;
    };
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match MapReader::new(item, format!("{path}[{i}]"), item.pos, m.errors()) {
            Some(mut r) => ok &= f(&mut r),
            None => ok = false,
        }
    }
    ok
}

/// `predefined: [{id: 1, topic: "farm/gw1/cmd"}]`.
fn decode_predefined(m: &mut MapReader) -> Option<Vec<(u16, String)>> {
    let mut out: Vec<(u16, String)> = Vec::new();
    let ok = for_each_item(m, "predefined", |r| {
        r.require(&["id", "topic"]);
        let id = r.int("id", 1..=65_534u16);
        let name = r.string("topic");
        let (Some(id), Some(name)) = (id, name) else {
            return false;
        };
        if !topic::valid_topic_name(&name) {
            r.error("topic", "must be a topic name without wildcards");
            return false;
        }
        if out.iter().any(|(i, _)| *i == id) {
            r.error("id", format!("topic id {id} is defined twice"));
            return false;
        }
        out.push((id, name));
        true
    });
    ok.then_some(out)
}

/// `topics: [{filter: "radio/+/+", as: readings, unit: degC}, {filter: "#", as: bus, prefix: "sn/"}]`.
fn decode_mappings(m: &mut MapReader) -> Option<Vec<Mapping>> {
    let mut out = Vec::new();
    let ok = for_each_item(m, "topics", |r| {
        r.require(&["filter"]);
        let filter = r.string("filter");
        let to = r.one_of("as", &["bus", "readings"]).unwrap_or("bus");
        let Some(filter) = filter else {
            r.skip_rest();
            return false;
        };
        if !topic::valid_topic_filter(&filter) {
            r.error("filter", format!("`{filter}` is not a valid topic filter"));
            r.skip_rest();
            return false;
        }
        let to = match to {
            "readings" => {
                if !filter.contains('+') {
                    r.error(
                        "filter",
                        "a readings mapping needs a `+` level for the device (e.g. radio/+/+)",
                    );
                    return false;
                }
                MapTo::Readings {
                    unit: r.string("unit"),
                }
            }
            _ => MapTo::Bus {
                prefix: r.string("prefix").unwrap_or_default(),
            },
        };
        out.push(Mapping { filter, to });
        true
    });
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:1883\n";

    fn errors(section: &str) -> Vec<String> {
        match crate::site::load_str(&format!("{HEAD}{section}"), "site.yaml") {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_and_full_section() {
        let cfg = crate::site::load_str(&format!("{HEAD}mqttsn:\n"), "site.yaml").unwrap();
        assert_eq!(cfg.mqttsn, Some(MqttSnConfig::default()));
        let cfg = crate::site::load_str(&format!("{HEAD}mqttsn:\n  listen: \"[::1]:2442\"\n  gateway_id: 9\n  advertise: {{address: 127.0.0.1:2443, interval: 2s}}\n  predefined:\n    - {{id: 5, topic: a/b}}\n  retry_interval: 2s\n  max_retries: 3\n  max_message_size: 2KiB\n  topics:\n    - {{filter: \"r/+/+\", as: readings, unit: degC}}\n    - {{filter: \"#\", prefix: \"x/\"}}\n"), "site.yaml").unwrap();
        let m = cfg.mqttsn.unwrap();
        assert_eq!(m.listen, vec!["[::1]:2442".parse().unwrap()]);
        assert_eq!(m.gateway_id, 9);
        assert_eq!(
            m.advertise,
            Some(("127.0.0.1:2443".parse().unwrap(), Duration::from_secs(2)))
        );
        assert_eq!(m.predefined, vec![(5, "a/b".to_string())]);
        assert_eq!(
            (m.retry_interval, m.max_retries, m.max_message_size),
            (Duration::from_secs(2), 3, 2048)
        );
        assert_eq!(
            m.mappings[0].to,
            MapTo::Readings {
                unit: Some("degC".into())
            }
        );
        assert_eq!(
            m.mappings[1].to,
            MapTo::Bus {
                prefix: "x/".into()
            }
        );
        assert_eq!(
            crate::site::load_str(HEAD, "site.yaml").unwrap().mqttsn,
            None
        );
        let cfg = crate::site::load_str(
            &format!("{HEAD}mqttsn:\n  max_clients_per_source: 50\n  session_expiry: 2d\n"),
            "site.yaml",
        )
        .unwrap();
        let m = cfg.mqttsn.unwrap();
        assert_eq!(
            (m.max_clients_per_source, m.session_expiry),
            (50, Duration::from_secs(2 * 86_400))
        );
    }

    #[test]
    fn bad_source_bound_and_session_expiry_are_located() {
        let e = errors("mqttsn:\n  max_clients_per_source: 0\n  session_expiry: 0s\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with("site.yaml:6:27: mqttsn.max_clients_per_source:"),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("site.yaml:7:19: mqttsn.session_expiry:"),
            "{e:#?}"
        );
    }

    #[test]
    fn bad_values_are_located() {
        assert_eq!(
            errors("mqttsn:\n  listen: [\"localhost\"]\n"),
            ["site.yaml:6:12: mqttsn.listen: `localhost` is not an IP address with a port; e.g. 0.0.0.0:1883, \"[::]:1883\""]
        );
        let e = errors("mqttsn:\n  gateway_id: 300\n  max_retries: x\n  predefined:\n    - {id: 0, topic: a}\n    - {id: 2, topic: \"a/+\"}\n  topics:\n    - {filter: \"a/#/b\"}\n    - {filter: \"a/b\", as: readings}\n  retry: 1s\n");
        assert_eq!(e.len(), 7, "{e:#?}");
        assert!(
            e[0].starts_with("site.yaml:6:15: mqttsn.gateway_id:"),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("site.yaml:7:16: mqttsn.max_retries:"),
            "{e:#?}"
        );
        assert!(
            e[2].starts_with("site.yaml:9:12: mqttsn.predefined[0].id:"),
            "{e:#?}"
        );
        assert!(
            e[3].contains("mqttsn.predefined[1].topic: must be a topic name without wildcards"),
            "{e:#?}"
        );
        assert!(
            e[4].contains("mqttsn.topics[0].filter: `a/#/b` is not a valid topic filter"),
            "{e:#?}"
        );
        assert!(
            e[5].contains("mqttsn.topics[1].filter: a readings mapping needs a `+` level"),
            "{e:#?}"
        );
        assert!(
            e[6].starts_with("site.yaml:14:3: mqttsn: unknown key `retry` (valid keys: listen,"),
            "{e:#?}"
        );
    }
}

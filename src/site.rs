//! The site file: one YAML file per site, decoded into each stage's own config.
//!
//! Loading never stops at the first problem: [`load`] returns every problem it finds, each with
//! the file, line and column it came from, so an integrator can fix a config in one pass. Every
//! section is decoded even when an earlier one failed. Each section's type and decoder live
//! beside the stage that uses it; this file only knows the list of sections.

use std::path::Path;

use crate::adapters::{self, AdapterConfig, DeviceConfig};
use crate::bus::{self, BrokerConfig};
use crate::config::decode::{Errors, MapReader};
use crate::config::template;
use crate::config::yaml::{self, Node, Pos, Value};
use crate::config::ConfigError;
use crate::health::{self, HealthConfig};
use crate::mqttsn::{self, MqttSnConfig};
use crate::normalize::{self, Normalizer, Topics};
use crate::store::{self, BufferConfig};
use crate::uplink::{self, UplinkConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub site: String,
    pub gateway: String,
    pub topics: Topics,
    pub broker: BrokerConfig,
    /// `None`: a local-only site; readings go to the local bus and nowhere else.
    pub uplink: Option<UplinkConfig>,
    pub buffer: BufferConfig,
    /// `None`: no `/metrics` and `/healthz` endpoint.
    pub health: Option<HealthConfig>,
    /// `None`: no MQTT-SN gateway.
    pub mqttsn: Option<MqttSnConfig>,
    /// In file order.
    pub devices: Vec<DeviceConfig>,
    /// SHA-256 of the file's text, first 16 hex digits: the birth message names the config a
    /// gateway runs, so a fleet can tell which site runs what.
    pub digest: String,
}

impl Config {
    /// The normalize stage of this site: its reading topic template and every device's points.
    pub fn normalizer(&self) -> Normalizer {
        let points = self.devices.iter().flat_map(|d| {
            d.points
                .iter()
                .map(move |(q, p)| (d.id.as_str(), q.as_str(), p.clone()))
        });
        Normalizer::with_points(&self.site, &self.gateway, &self.topics.reading, points)
    }
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
    let site = template::id(&mut m, "site");
    let gateway = template::id(&mut m, "gateway");
    let names = site.as_deref().zip(gateway.as_deref());

    let topics = m
        .section("topics")
        .and_then(|mut t| normalize::config::decode_topics(&mut t));
    let broker = m
        .section("broker")
        .and_then(|mut b| bus::config::decode_broker(&mut b));
    let uplink = match m.map("uplink") {
        Some(mut u) => uplink::config::decode_uplink(&mut u, names).map(Some),
        None => Some(None),
    };
    let buffer = m
        .section("buffer")
        .and_then(|mut b| store::config::decode_buffer(&mut b));
    let health = match m.map("health") {
        Some(mut h) => health::config::decode(&mut h).map(Some),
        None => Some(None),
    };
    let mqttsn = match m.map("mqttsn") {
        Some(mut s) => mqttsn::config::decode(&mut s).map(Some),
        None => Some(None),
    };
    let mut devices = Vec::new();
    let mut devices_ok = true;
    if let Some(mut d) = m.map("devices") {
        d.for_each_map(|id, dev| match adapters::device::decode_device(id, dev) {
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

#[cfg(test)]
mod tests;

//! Site configuration: one YAML file per site, decoded into these types.
//!
//! Loading never stops at the first problem: [`load`] returns every problem it finds, each with
//! the file, line and column it came from, so an integrator can fix a config in one pass.
//!
//! - [`yaml`]: YAML text -> node tree with a line and column on every node and key
//! - [`decode`]: the map reader that section decoders (ours and each adapter's) are written with
//! - [`units`]: `200ms` / `1h30m` durations and `512KiB` sizes
//! - `load`: the schema: decoding and validation of the whole file

pub mod decode;
mod load;
pub mod units;
pub mod yaml;

pub use load::{load, load_str};
pub use units::{parse_duration, parse_size};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::adapters::AdapterConfig;

/// One problem in a config file, located at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

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
    pub health: Option<crate::health::HealthConfig>,
    /// `None`: no MQTT-SN gateway.
    pub mqttsn: Option<crate::mqttsn::MqttSnConfig>,
    /// In file order.
    pub devices: Vec<DeviceConfig>,
    /// SHA-256 of the file's text, first 16 hex digits: the birth message names the config a
    /// gateway runs, so a fleet can tell which site runs what.
    pub digest: String,
}

/// Topic templates. Placeholders: `{site}`, `{gateway}`, and for readings and device status
/// also `{device}`; readings also `{quantity}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub reading: String,
    pub status: String,
    pub device_status: String,
}

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

#[derive(Debug, Clone, PartialEq)]
pub struct BufferConfig {
    /// Relative paths are relative to the working directory.
    pub dir: PathBuf,
    pub commit_interval: Duration,
    /// How often the local bus writes the retained copies of the gateway's own readings that
    /// changed (and at a clean stop); zero writes them with every commit.
    pub retained_flush: Duration,
    /// Caps: past any of them the oldest telemetry is dropped (and counted); alarms never are.
    pub max_bytes: u64,
    pub max_rows: u64,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub id: String,
    pub adapter: AdapterConfig,
    /// Keyed by quantity; a quantity the adapter produces but that is not listed gets defaults.
    pub points: BTreeMap<String, PointConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointConfig {
    /// Overrides the adapter's unit.
    pub unit: Option<String>,
    pub scale: f64,
    pub offset: f64,
    /// Outside `[valid_min, valid_max]` a value is published with quality `out_of_range`.
    pub valid_min: Option<f64>,
    pub valid_max: Option<f64>,
    /// Crossing below `alarm_low` or above `alarm_high` (and coming back) is an alarm: marked in
    /// the payload, sent before queued telemetry and never dropped by the buffer's caps.
    pub alarm_low: Option<f64>,
    pub alarm_high: Option<f64>,
    /// A value that moved less than this since the last published one is held back...
    pub deadband: f64,
    /// ...unless this long has passed since the last publish.
    pub heartbeat: Option<Duration>,
    pub decimals: Option<u8>,
}

impl Default for PointConfig {
    fn default() -> Self {
        PointConfig {
            unit: None,
            scale: 1.0,
            offset: 0.0,
            valid_min: None,
            valid_max: None,
            alarm_low: None,
            alarm_high: None,
            deadband: 0.0,
            heartbeat: None,
            decimals: None,
        }
    }
}

/// Expands `{site}` and `{gateway}` (and any other `{name}` given) in a template.
pub fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

//! The `health:` config section.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::decode::MapReader;

/// `health: { listen, uplink_grace }`. Absent section: no HTTP endpoint (the watchdog still runs
/// under systemd).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Where `/metrics` and `/healthz` are served (plain HTTP; keep it on loopback or a trusted
    /// network).
    pub listen: SocketAddr,
    /// How long the uplink may be down before `/healthz` reports the gateway degraded.
    pub uplink_grace: Duration,
}

pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9100);
pub const DEFAULT_UPLINK_GRACE: Duration = Duration::from_secs(120);

pub(crate) fn decode(m: &mut MapReader) -> Option<HealthConfig> {
    let listen = m.socket_addr("listen");
    let listen_ok = listen.is_some() || m.node("listen").is_none();
    let grace = m.duration(
        "uplink_grace",
        Duration::from_secs(1)..=Duration::from_secs(7 * 86_400),
    );
    let grace_ok = grace.is_some() || m.node("uplink_grace").is_none();
    (listen_ok && grace_ok).then_some(())?;
    Some(HealthConfig {
        listen: listen.unwrap_or(SocketAddr::from(DEFAULT_LISTEN)),
        uplink_grace: grace.unwrap_or(DEFAULT_UPLINK_GRACE),
    })
}

//! Southbound adapters: each turns bytes or registers into [`Reading`](crate::reading::Reading)s.
//! `AdapterConfig` is the only place that lists them all.

pub mod sim;

use crate::config::decode::MapReader;

/// Which transport a device is read through, with that transport's own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum AdapterConfig {
    Sim(sim::SimConfig),
}

impl AdapterConfig {
    /// The adapter keys a device may have in the site config, one per variant.
    pub const KINDS: &'static [&'static str] = &["sim"];

    /// Decodes the section under adapter key `kind` (one of [`KINDS`](Self::KINDS)).
    pub(crate) fn decode(kind: &str, m: &mut MapReader) -> Option<AdapterConfig> {
        match kind {
            "sim" => sim::decode(m).map(AdapterConfig::Sim),
            _ => None,
        }
    }

    /// The quantities this device produces, with the unit each is measured in.
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            AdapterConfig::Sim(s) => s.quantities(),
        }
    }

    /// How often the device reports when it is healthy; its staleness clock is built on this.
    pub fn interval(&self) -> std::time::Duration {
        match self {
            AdapterConfig::Sim(s) => s.interval,
        }
    }
}

/// Starts reading every configured device; readings go to `tx` until `shutdown`.
///
/// This is the one place that knows how devices map onto tasks: a simulated device is a task of
/// its own, while transports that share a bus (an I2C bus, an RS-485 line) group their devices
/// onto one worker.
pub fn start(
    devices: &[crate::config::DeviceConfig],
    tx: &tokio::sync::mpsc::Sender<crate::reading::Reading>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for d in devices {
        match &d.adapter {
            AdapterConfig::Sim(c) => tasks.push(tokio::spawn(sim::run(
                d.id.clone(),
                c.clone(),
                tx.clone(),
                shutdown.clone(),
            ))),
        }
    }
    tasks
}

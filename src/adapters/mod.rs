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

//! Southbound adapters: each turns bytes or registers into [`Reading`](crate::reading::Reading)s.
//! `AdapterConfig` is the only place that lists them all.

pub mod sim;

/// Which transport a device is read through, with that transport's own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum AdapterConfig {
    Sim(sim::SimConfig),
}

impl AdapterConfig {
    /// The quantities this device produces, with the unit each is measured in.
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            AdapterConfig::Sim(s) => s.quantities(),
        }
    }
}

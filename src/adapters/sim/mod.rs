//! Simulated sensors for demos and tests: a daily temperature sine and a tank that fills and drains.

mod config;

pub(crate) use config::decode;
pub use config::{Signal, SimConfig};

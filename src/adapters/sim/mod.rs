//! Simulated sensors for demos and tests: a daily temperature sine and a tank that fills and drains.

mod config;

pub use config::{Signal, SimConfig};

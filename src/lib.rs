//! edgegate: an IoT edge gateway. Sensors in, normalized MQTT out, nothing lost on the way.

pub mod adapters;
pub mod bus;
pub mod config;
pub mod reading;

//! edgegate: an IoT edge gateway. Sensors in, normalized MQTT out, nothing lost on the way.
//!
//! Data flows one way: adapters produce [`reading::Reading`]s, [`normalize`] turns them into
//! messages, the bus (the local broker) delivers them on site, and the forward rules put them in
//! the [`store`] outbox, from which the uplink sends them upstream.

pub mod adapters;
pub mod app;
pub mod bus;
pub mod config;
pub mod doctor;
pub mod forward;
pub mod health;
pub mod mqttsn;
pub mod normalize;
pub mod pem;
pub mod reading;
pub mod reload;
pub mod site;
pub mod stages;
pub mod status;
pub mod store;
pub mod uplink;

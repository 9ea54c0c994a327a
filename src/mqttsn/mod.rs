//! MQTT-SN 1.2 gateway over UDP for radio sensor nodes (and the forwarders in front of them).
//!
//! An aggregating gateway: every client's PUBLISH goes onto the local bus (straight through or as
//! a normalized reading, per `mqttsn.topics`), and every client's SUBSCRIBE is a bus
//! subscription.
//!
//! - `codec`: every message type, the 3-byte length form, forwarder encapsulation.
//! - `session` + `flows`: the protocol state machine, no I/O; `topics` and `qos` its parts.
//! - `lifetime`: sessions per source address, and the expiry of those that never return.
//! - `persist`: client sessions in the store's state table, across restarts.
//! - `mapping`: topic -> bus message or reading.
//! - `gateway`: sockets, timers, bus and store around the state machine.

pub mod codec;
pub mod config;
mod flows;
pub mod gateway;
mod lifetime;
pub mod mapping;
pub mod persist;
pub mod qos;
pub mod session;
pub mod topics;

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::normalize::Inlet;
use crate::store::Store;

pub use config::MqttSnConfig;

/// Starts the gateway of `mq` on `bus`; it runs until `shutdown`. `vars` are the site's
/// `{site}` and `{gateway}` for the mappings' templates; `gateway_status` is the gateway's own
/// status topic, beside which the gateway's stats go.
pub async fn start(
    mq: &MqttSnConfig,
    vars: [(&str, &str); 2],
    gateway_status: &str,
    bus: &Bus,
    store: &Store,
    readings: Inlet,
    shutdown: CancellationToken,
) -> std::io::Result<(Vec<SocketAddr>, JoinHandle<()>)> {
    let mapper = mapping::Mapper::new(&mq.mappings, &vars);
    let stats_topic = format!(
        "{}/mqttsn/stats",
        gateway_status.trim_end_matches("/status")
    );
    gateway::start(
        mq,
        stats_topic,
        (mapper, readings),
        bus.clone(),
        store.clone(),
        shutdown,
    )
    .await
}

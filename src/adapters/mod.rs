//! Southbound adapters: each turns bytes or registers into [`Reading`](crate::reading::Reading)s.
//! `AdapterConfig` is the only place that lists them all.

pub mod device;
pub mod i2c;
pub mod onewire;
pub mod poll;
pub mod serial;
pub mod sim;

pub use device::DeviceConfig;

use crate::config::decode::MapReader;

/// Which transport a device is read through, with that transport's own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum AdapterConfig {
    Sim(sim::SimConfig),
    I2c(i2c::I2cConfig),
    OneWire(onewire::OneWireConfig),
    Serial(serial::SerialConfig),
    Modbus(serial::modbus::ModbusConfig),
}

impl AdapterConfig {
    /// The adapter keys a device may have in the site config, one per variant.
    pub const KINDS: &'static [&'static str] = &["sim", "i2c", "onewire", "serial", "modbus"];

    /// Decodes the section under adapter key `kind` (one of [`KINDS`](Self::KINDS)).
    pub(crate) fn decode(kind: &str, m: &mut MapReader) -> Option<AdapterConfig> {
        match kind {
            "sim" => sim::decode(m).map(AdapterConfig::Sim),
            "i2c" => i2c::decode(m).map(AdapterConfig::I2c),
            "onewire" => onewire::decode(m).map(AdapterConfig::OneWire),
            "serial" => serial::decode(m).map(AdapterConfig::Serial),
            "modbus" => serial::modbus::map::decode(m).map(AdapterConfig::Modbus),
            _ => None,
        }
    }

    /// Checks across devices, once each is decoded: ports shared by serial devices.
    pub(crate) fn check_devices(
        devices: &[crate::adapters::DeviceConfig],
        errs: &mut crate::config::decode::Errors,
    ) {
        serial::port::check_shared(devices, errs);
    }

    /// The quantities this device produces, with the unit each is measured in.
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            AdapterConfig::Sim(s) => s.quantities(),
            AdapterConfig::I2c(c) => c.quantities(),
            AdapterConfig::OneWire(c) => c.quantities(),
            AdapterConfig::Serial(c) => c.quantities(),
            AdapterConfig::Modbus(c) => c.quantities(),
        }
    }

    /// How often the device reports when it is healthy; its staleness clock is built on this.
    pub fn interval(&self) -> std::time::Duration {
        match self {
            AdapterConfig::Sim(s) => s.interval,
            AdapterConfig::I2c(c) => c.interval,
            AdapterConfig::OneWire(c) => c.interval,
            AdapterConfig::Serial(c) => c.interval,
            AdapterConfig::Modbus(c) => c.interval,
        }
    }
}

/// Starts reading every configured device; readings go to `tx` until `shutdown`.
///
/// This is the one place that knows how devices map onto tasks: a simulated device is a task of
/// its own, while transports that share a bus (an I2C bus, an RS-485 line) group their devices
/// onto one worker.
pub fn start(
    devices: &[crate::adapters::DeviceConfig],
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
            // Started below: one worker thread per bus, one task per RS-485 line.
            AdapterConfig::I2c(_) | AdapterConfig::Modbus(_) => {}
            AdapterConfig::Serial(c) => tasks.push(tokio::spawn(serial::run(
                d.id.clone(),
                c.clone(),
                tx.clone(),
                shutdown.clone(),
            ))),
            AdapterConfig::OneWire(c) => tasks.push(tokio::spawn(onewire::run(
                d.id.clone(),
                c.clone(),
                tx.clone(),
                shutdown.clone(),
            ))),
        }
    }
    for (bus, list) in i2c::by_bus(devices) {
        let path = bus.clone();
        tasks.push(i2c::worker::spawn(
            bus,
            list,
            move || i2c::worker::open_linux(&path),
            tx.clone(),
            shutdown.clone(),
        ));
    }
    for (port, list) in serial::modbus::by_port(devices) {
        tasks.push(tokio::spawn(serial::modbus::run_port(
            port,
            list,
            tx.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}

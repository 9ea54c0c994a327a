//! Sensors on the Pi's own I2C buses.
//!
//! Every driver is generic over [`embedded_hal::i2c::I2c`] and borrows the bus per call, so one
//! blocking worker thread per bus ([`worker`]) serves every device on it, and tests drive the
//! drivers with register traces. Conversions are pure functions beside each driver.

pub mod ads1115;
pub mod bme280;
mod config;
pub mod mcp9808;
pub mod scan;
pub mod sht3x;
pub mod sht4x;
pub mod tmp102;
pub mod vl53l0x;
pub mod worker;

pub(crate) use config::decode;
pub use config::{I2cConfig, Model, ModelConfig};

use std::fmt;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, I2c, NoAcknowledgeSource};

use crate::reading::Quality;

/// One measured quantity, as a driver returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub quantity: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub quality: Quality,
}

impl Value {
    pub fn good(quantity: &'static str, value: f64, unit: &'static str) -> Value {
        Value {
            quantity,
            value,
            unit,
            quality: Quality::Good,
        }
    }
}

/// Why a device gave no reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The bus transfer failed; `detail` is the platform's own error text.
    I2c { kind: ErrorKind, detail: String },
    /// A checksum over received data did not match.
    Crc {
        what: &'static str,
        got: u8,
        computed: u8,
    },
    /// The chip answered, but is not the configured model.
    WrongChip {
        register: u8,
        got: u16,
        expected: &'static str,
    },
    /// The chip answered with something that is not a measurement (a wiring fault, no target).
    Fault(String),
}

impl Error {
    pub(crate) fn i2c<E: embedded_hal::i2c::Error>(e: E) -> Error {
        Error::I2c {
            kind: e.kind(),
            detail: detail(&e),
        }
    }

    /// The most likely cause, for the log line a technician reads.
    pub fn hint(&self) -> &'static str {
        match self {
            Error::I2c {
                kind: ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
                ..
            }
            | Error::I2c {
                kind: ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown),
                ..
            } => "nothing answers at this address: wrong address (see `edgegate sensors scan`), or the sensor is not wired or powered",
            Error::I2c { kind: ErrorKind::NoAcknowledge(_), .. } => "the chip stopped answering mid-transfer: busy converting, or a loose wire",
            // The Pi's controller reports a missing chip as a plain I/O error.
            Error::I2c { .. } => "bus error: check the address (see `edgegate sensors scan`), wiring, pull-ups and power",
            Error::Crc { .. } => "corrupted transfer: noise on the bus, long wires or a weak pull-up",
            Error::WrongChip { .. } => "a different chip answers at this address: check the model and address",
            Error::Fault(_) => "the sensor reports a fault; check the wiring of its input",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::I2c { kind, detail } => write!(f, "{kind} ({detail})"),
            Error::Crc {
                what,
                got,
                computed,
            } => write!(
                f,
                "CRC mismatch in {what}: received 0x{got:02X}, computed 0x{computed:02X}"
            ),
            Error::WrongChip {
                register,
                got,
                expected,
            } => write!(
                f,
                "register 0x{register:02X} reads 0x{got:02X}, expected {expected}"
            ),
            Error::Fault(m) => f.write_str(m),
        }
    }
}

/// The platform's error text. Linux errors carry an errno, whose text says more than its number
/// (a missing chip on the Pi's controller is "Remote I/O error").
fn detail<E: fmt::Debug>(e: &E) -> String {
    let d = format!("{e:?}");
    let errno = d
        .split("Errno(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse::<i32>().ok());
    match errno {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => d,
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// CRC-8 of Sensirion's SHT3x/SHT4x: polynomial 0x31, init 0xFF, no reflection.
pub fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0xFFu8;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Checks one Sensirion word (2 data bytes + CRC) and returns its value.
pub(crate) fn sensirion_word(bytes: &[u8], what: &'static str) -> Result<u16> {
    let computed = crc8(&bytes[..2]);
    if bytes[2] != computed {
        return Err(Error::Crc {
            what,
            got: bytes[2],
            computed,
        });
    }
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Reads a register block: write the register address, then read `buf.len()` bytes.
pub(crate) fn read_reg<I: I2c>(i2c: &mut I, addr: u8, reg: u8, buf: &mut [u8]) -> Result<()> {
    i2c.write_read(addr, &[reg], buf).map_err(Error::i2c)
}

pub(crate) fn write<I: I2c>(i2c: &mut I, addr: u8, bytes: &[u8]) -> Result<()> {
    i2c.write(addr, bytes).map_err(Error::i2c)
}

/// The I2C devices of a site grouped by bus, each group in config order: one worker each.
pub fn by_bus(
    devices: &[crate::adapters::DeviceConfig],
) -> Vec<(String, Vec<(String, I2cConfig)>)> {
    let mut buses: Vec<(String, Vec<(String, I2cConfig)>)> = Vec::new();
    for d in devices {
        let crate::adapters::AdapterConfig::I2c(c) = &d.adapter else {
            continue;
        };
        match buses.iter_mut().find(|(b, _)| *b == c.bus) {
            Some((_, list)) => list.push((d.id.clone(), c.clone())),
            None => buses.push((c.bus.clone(), vec![(d.id.clone(), c.clone())])),
        }
    }
    buses
}

/// A configured chip with its driver state.
#[derive(Debug, Clone)]
pub enum Chip {
    Tmp102(tmp102::Tmp102),
    Mcp9808(mcp9808::Mcp9808),
    Sht3x(sht3x::Sht3x),
    Sht4x(sht4x::Sht4x),
    Bme280(bme280::Bme280),
    Ads1115(ads1115::Ads1115),
    Vl53l0x(vl53l0x::Vl53l0x),
}

impl Chip {
    pub fn new(cfg: &I2cConfig) -> Chip {
        let a = cfg.address;
        match &cfg.model {
            ModelConfig::Tmp102 => Chip::Tmp102(tmp102::Tmp102::new(a)),
            ModelConfig::Mcp9808 => Chip::Mcp9808(mcp9808::Mcp9808::new(a)),
            ModelConfig::Sht3x => Chip::Sht3x(sht3x::Sht3x::new(a)),
            ModelConfig::Sht4x => Chip::Sht4x(sht4x::Sht4x::new(a)),
            ModelConfig::Bme280 => Chip::Bme280(bme280::Bme280::new(a)),
            ModelConfig::Ads1115(c) => Chip::Ads1115(ads1115::Ads1115::new(a, c.clone())),
            ModelConfig::Vl53l0x(c) => Chip::Vl53l0x(vl53l0x::Vl53l0x::new(a, c.clone())),
        }
    }

    /// Checks that the chip is there and is what it should be, and sets it up.
    pub fn init<I: I2c, D: DelayNs>(&mut self, i2c: &mut I, delay: &mut D) -> Result<()> {
        match self {
            Chip::Tmp102(c) => c.init(i2c),
            Chip::Mcp9808(c) => c.init(i2c),
            Chip::Sht3x(c) => c.init(i2c, delay),
            Chip::Sht4x(c) => c.init(i2c, delay),
            Chip::Bme280(c) => c.init(i2c, delay),
            Chip::Ads1115(c) => c.init(i2c),
            Chip::Vl53l0x(c) => c.init(i2c),
        }
    }

    /// One measurement: every quantity the chip produces.
    pub fn measure<I: I2c, D: DelayNs>(
        &mut self,
        i2c: &mut I,
        delay: &mut D,
    ) -> Result<Vec<Value>> {
        match self {
            Chip::Tmp102(c) => c.measure(i2c),
            Chip::Mcp9808(c) => c.measure(i2c),
            Chip::Sht3x(c) => c.measure(i2c, delay),
            Chip::Sht4x(c) => c.measure(i2c, delay),
            Chip::Bme280(c) => c.measure(i2c, delay),
            Chip::Ads1115(c) => c.measure(i2c, delay),
            Chip::Vl53l0x(c) => c.measure(i2c, delay),
        }
    }
}

/// `DelayNs` for the worker thread: a real sleep (the thread is the bus's own).
pub struct ThreadDelay;

impl DelayNs for ThreadDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(std::time::Duration::from_nanos(ns.into()));
    }
}

/// The quality of a level in percent: inside 0..=100 it is good, outside it is out of range.
pub(crate) fn level_value(level: f64) -> Value {
    Value {
        quantity: "level",
        value: level,
        unit: "%",
        quality: if (0.0..=100.0).contains(&level) {
            Quality::Good
        } else {
            Quality::OutOfRange
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linux_embedded_hal::i2cdev::linux::LinuxI2CError;

    #[test]
    fn linux_errors_read_as_their_errno_text() {
        let e = Error::i2c(linux_embedded_hal::I2CError::from(LinuxI2CError::Errno(
            121,
        )));
        assert!(
            e.to_string().contains("Remote I/O error (os error 121)"),
            "{e}"
        );
        let e = Error::i2c(linux_embedded_hal::I2CError::from(LinuxI2CError::Errno(6)));
        assert!(
            matches!(
                e,
                Error::I2c {
                    kind: ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.hint().contains("wrong address"), "{}", e.hint());
    }
}

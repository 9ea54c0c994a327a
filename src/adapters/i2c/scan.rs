//! `edgegate sensors scan`: which addresses answer on a bus, and which of our models use them.

use std::fmt::Write;

use embedded_hal::i2c::I2c;

use super::Model;

/// The 7-bit addresses a scan probes (0x00..0x02 and 0x78..0x7F are reserved).
pub const FIRST: u8 = 0x03;
pub const LAST: u8 = 0x77;

/// Addresses that acknowledge a one-byte read. A read, not a write, as `i2cdetect -r` does:
/// writing can change a chip's state (some EEPROMs lock on a quick write).
pub fn probe<I: I2c>(i2c: &mut I) -> Vec<u8> {
    let mut buf = [0u8; 1];
    (FIRST..=LAST)
        .filter(|&a| i2c.read(a, &mut buf).is_ok())
        .collect()
}

/// Our models that can answer at `address`.
pub fn models_at(address: u8) -> Vec<&'static str> {
    Model::ALL
        .iter()
        .filter(|m| m.addresses().contains(&address))
        .map(|m| m.name())
        .collect()
}

/// The scan's report: one line per responding address, with the models that use it.
pub fn report<I: I2c>(bus: &str, i2c: &mut I) -> String {
    let found = probe(i2c);
    let mut out = String::new();
    for a in &found {
        let models = models_at(*a);
        let models = if models.is_empty() {
            "(no edgegate driver)".to_string()
        } else {
            models.join(", ")
        };
        let _ = writeln!(out, "0x{a:02X}  {models}");
    }
    let _ = writeln!(
        out,
        "{bus}: {} device{} answered",
        found.len(),
        if found.len() == 1 { "" } else { "s" }
    );
    out
}

/// Opens `bus` and scans it; the error says why the bus could not be opened.
pub fn run(bus: &str) -> Result<String, String> {
    let mut i2c = super::worker::open_linux(bus).map_err(|e| super::worker::open_error(bus, &e))?;
    Ok(report(bus, &mut i2c))
}

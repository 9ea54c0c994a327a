//! Microchip MCP9808 digital temperature sensor (0x18..0x1F).

use embedded_hal::i2c::I2c;

use super::{read_reg, write, Error, Result, Value};

pub const REG_CONFIG: u8 = 0x01;
pub const REG_AMBIENT: u8 = 0x05;
pub const REG_MANUFACTURER_ID: u8 = 0x06;
pub const REG_DEVICE_ID: u8 = 0x07;
pub const MANUFACTURER_ID: u16 = 0x0054;
/// Upper byte of the device id register; the lower byte is the revision.
pub const DEVICE_ID: u8 = 0x04;

#[derive(Debug, Clone)]
pub struct Mcp9808 {
    address: u8,
}

impl Mcp9808 {
    pub fn new(address: u8) -> Mcp9808 {
        Mcp9808 { address }
    }

    /// Checks the manufacturer and device ids, then selects continuous conversion (config 0).
    pub fn init<I: I2c>(&mut self, i2c: &mut I) -> Result<()> {
        let mut buf = [0u8; 2];
        read_reg(i2c, self.address, REG_MANUFACTURER_ID, &mut buf)?;
        let id = u16::from_be_bytes(buf);
        if id != MANUFACTURER_ID {
            return Err(Error::WrongChip {
                register: REG_MANUFACTURER_ID,
                got: id,
                expected: "0x54 (MCP9808)",
            });
        }
        read_reg(i2c, self.address, REG_DEVICE_ID, &mut buf)?;
        if buf[0] != DEVICE_ID {
            return Err(Error::WrongChip {
                register: REG_DEVICE_ID,
                got: u16::from_be_bytes(buf),
                expected: "0x04xx (MCP9808)",
            });
        }
        write(i2c, self.address, &[REG_CONFIG, 0x00, 0x00])
    }

    pub fn measure<I: I2c>(&mut self, i2c: &mut I) -> Result<Vec<Value>> {
        let mut buf = [0u8; 2];
        read_reg(i2c, self.address, REG_AMBIENT, &mut buf)?;
        let t = to_celsius(u16::from_be_bytes(buf));
        Ok(vec![Value::good("temperature", t, "degC")])
    }
}

/// Ambient register -> degC: bits 15..13 are alert flags, 12..0 a two's complement count of
/// 1/16 degC.
pub fn to_celsius(raw: u16) -> f64 {
    let counts = i32::from(raw & 0x1FFF);
    let counts = if counts & 0x1000 != 0 {
        counts - 0x2000
    } else {
        counts
    };
    f64::from(counts) / 16.0
}

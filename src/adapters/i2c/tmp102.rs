//! TI TMP102 digital temperature sensor (0x48..0x4B).

use embedded_hal::i2c::I2c;

use super::{read_reg, write, Result, Value};

pub const REG_TEMPERATURE: u8 = 0x00;
pub const REG_CONFIG: u8 = 0x01;
/// Power-up configuration: continuous conversion at 4 Hz, 12-bit (EM = 0), comparator mode.
pub const CONFIG_DEFAULT: u16 = 0x60A0;
/// Extended mode bit in the temperature register's low byte: the value is 13-bit.
const EM: u16 = 0x0001;

#[derive(Debug, Clone)]
pub struct Tmp102 {
    address: u8,
}

impl Tmp102 {
    pub fn new(address: u8) -> Tmp102 {
        Tmp102 { address }
    }

    /// Writes the power-up configuration, taking the chip out of shutdown if a previous owner
    /// left it there.
    pub fn init<I: I2c>(&mut self, i2c: &mut I) -> Result<()> {
        let [hi, lo] = CONFIG_DEFAULT.to_be_bytes();
        write(i2c, self.address, &[REG_CONFIG, hi, lo])
    }

    /// Reads the last conversion (the chip converts continuously).
    pub fn measure<I: I2c>(&mut self, i2c: &mut I) -> Result<Vec<Value>> {
        let mut buf = [0u8; 2];
        read_reg(i2c, self.address, REG_TEMPERATURE, &mut buf)?;
        let t = to_celsius(u16::from_be_bytes(buf));
        Ok(vec![Value::good("temperature", t, "degC")])
    }
}

/// Temperature register -> degC: left-justified two's complement, 0.0625 degC per LSB, 12 bits
/// (13 in extended mode).
pub fn to_celsius(raw: u16) -> f64 {
    let signed = raw as i16;
    let counts = if raw & EM != 0 {
        signed >> 3
    } else {
        signed >> 4
    };
    f64::from(counts) * 0.0625
}

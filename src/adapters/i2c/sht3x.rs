//! Sensirion SHT3x humidity and temperature sensor (0x44 / 0x45). Our own small driver: single
//! shot measurements without clock stretching, every word CRC-checked.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{sensirion_word, write, Error, Result, Value};

/// Single shot, high repeatability, clock stretching disabled.
pub const CMD_MEASURE_HIGH: [u8; 2] = [0x24, 0x00];
pub const CMD_SOFT_RESET: [u8; 2] = [0x30, 0xA2];
/// High repeatability takes up to 15 ms.
const MEASURE_MS: u32 = 16;
/// Soft reset takes up to 1.5 ms.
const RESET_MS: u32 = 2;

#[derive(Debug, Clone)]
pub struct Sht3x {
    address: u8,
}

impl Sht3x {
    pub fn new(address: u8) -> Sht3x {
        Sht3x { address }
    }

    pub fn init<I: I2c, D: DelayNs>(&mut self, i2c: &mut I, delay: &mut D) -> Result<()> {
        write(i2c, self.address, &CMD_SOFT_RESET)?;
        delay.delay_ms(RESET_MS);
        Ok(())
    }

    pub fn measure<I: I2c, D: DelayNs>(
        &mut self,
        i2c: &mut I,
        delay: &mut D,
    ) -> Result<Vec<Value>> {
        write(i2c, self.address, &CMD_MEASURE_HIGH)?;
        delay.delay_ms(MEASURE_MS);
        let mut buf = [0u8; 6];
        i2c.read(self.address, &mut buf).map_err(Error::i2c)?;
        let t = sensirion_word(&buf[0..3], "temperature")?;
        let rh = sensirion_word(&buf[3..6], "humidity")?;
        Ok(vec![
            Value::good("temperature", temperature(t), "degC"),
            Value::good("humidity", humidity(rh), "%"),
        ])
    }
}

/// T = -45 + 175 * raw / 65535 degC.
pub fn temperature(raw: u16) -> f64 {
    -45.0 + 175.0 * f64::from(raw) / 65535.0
}

/// RH = 100 * raw / 65535 %.
pub fn humidity(raw: u16) -> f64 {
    100.0 * f64::from(raw) / 65535.0
}

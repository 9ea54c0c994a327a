//! Sensirion SHT4x humidity and temperature sensor (0x44 / 0x45 / 0x46).

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{sensirion_word, write, Error, Result, Value};

pub const CMD_MEASURE_HIGH: u8 = 0xFD;
pub const CMD_SERIAL: u8 = 0x89;
pub const CMD_SOFT_RESET: u8 = 0x94;
/// High precision takes up to 8.3 ms.
const MEASURE_MS: u32 = 10;
const SHORT_MS: u32 = 1;

#[derive(Debug, Clone)]
pub struct Sht4x {
    address: u8,
    pub serial: Option<u32>,
}

impl Sht4x {
    pub fn new(address: u8) -> Sht4x {
        Sht4x {
            address,
            serial: None,
        }
    }

    /// Soft reset, then reads the serial number: proves the chip is an SHT4x that answers with
    /// valid CRCs.
    pub fn init<I: I2c, D: DelayNs>(&mut self, i2c: &mut I, delay: &mut D) -> Result<()> {
        write(i2c, self.address, &[CMD_SOFT_RESET])?;
        delay.delay_ms(SHORT_MS);
        write(i2c, self.address, &[CMD_SERIAL])?;
        delay.delay_ms(SHORT_MS);
        let mut buf = [0u8; 6];
        i2c.read(self.address, &mut buf).map_err(Error::i2c)?;
        let hi = sensirion_word(&buf[0..3], "serial number")?;
        let lo = sensirion_word(&buf[3..6], "serial number")?;
        self.serial = Some(u32::from(hi) << 16 | u32::from(lo));
        Ok(())
    }

    pub fn measure<I: I2c, D: DelayNs>(
        &mut self,
        i2c: &mut I,
        delay: &mut D,
    ) -> Result<Vec<Value>> {
        write(i2c, self.address, &[CMD_MEASURE_HIGH])?;
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

/// RH = -6 + 125 * raw / 65535 %, clamped to 0..100 as the datasheet advises.
pub fn humidity(raw: u16) -> f64 {
    (-6.0 + 125.0 * f64::from(raw) / 65535.0).clamp(0.0, 100.0)
}

//! Bosch BME280 temperature, humidity and pressure sensor (0x76 / 0x77), in forced mode with
//! 1x oversampling: one conversion per reading, asleep in between (no self-heating).

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{read_reg, write, Error, Result, Value};

pub const REG_CHIP_ID: u8 = 0xD0;
pub const REG_RESET: u8 = 0xE0;
pub const REG_CALIB_TP: u8 = 0x88;
pub const REG_CALIB_H: u8 = 0xE1;
pub const REG_CTRL_HUM: u8 = 0xF2;
pub const REG_CTRL_MEAS: u8 = 0xF4;
pub const REG_CONFIG: u8 = 0xF5;
pub const REG_DATA: u8 = 0xF7;
pub const CHIP_ID: u8 = 0x60;
pub const RESET_WORD: u8 = 0xB6;
/// osrs_h = 1x.
pub const CTRL_HUM: u8 = 0x01;
/// osrs_t = 1x, osrs_p = 1x, sleep mode.
pub const CTRL_MEAS_SLEEP: u8 = 0x24;
/// The same with forced mode: one conversion, then back to sleep.
pub const CTRL_MEAS_FORCED: u8 = 0x25;
/// 0x88..0xA1 and 0xE1..0xE7.
pub const CALIB_TP_LEN: usize = 26;
pub const CALIB_H_LEN: usize = 7;
/// Reset takes 2 ms (start-up time); a 1x/1x/1x conversion at most 9.3 ms.
const RESET_MS: u32 = 3;
const MEASURE_MS: u32 = 10;
/// The value the data registers hold for a skipped or not yet done conversion.
const SKIPPED_20BIT: u32 = 0x80000;

/// Factory trimming parameters (datasheet table 16).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// From the two calibration blocks as read from 0x88 and 0xE1.
    pub fn parse(tp: &[u8; CALIB_TP_LEN], h: &[u8; CALIB_H_LEN]) -> Calibration {
        let u = |i: usize| u16::from_le_bytes([tp[i], tp[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([tp[i], tp[i + 1]]);
        Calibration {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            h1: tp[25],
            h2: i16::from_le_bytes([h[0], h[1]]),
            h3: h[2],
            // 12-bit signed values split across 0xE4..0xE6.
            h4: (i16::from(h[3] as i8) << 4) | i16::from(h[4] & 0x0F),
            h5: (i16::from(h[5] as i8) << 4) | i16::from(h[4] >> 4),
            h6: h[6] as i8,
        }
    }

    /// Temperature in degC and t_fine (datasheet 8.1, double precision).
    pub fn temperature(&self, adc_t: u32) -> (f64, i32) {
        let adc = f64::from(adc_t);
        let (t1, t2, t3) = (f64::from(self.t1), f64::from(self.t2), f64::from(self.t3));
        let var1 = (adc / 16384.0 - t1 / 1024.0) * t2;
        let d = adc / 131072.0 - t1 / 8192.0;
        let var2 = d * d * t3;
        ((var1 + var2) / 5120.0, (var1 + var2) as i32)
    }

    /// Pressure in Pa, `None` when the calibration would divide by zero.
    pub fn pressure(&self, adc_p: u32, t_fine: i32) -> Option<f64> {
        let p = |v: i16| f64::from(v);
        let mut var1 = f64::from(t_fine) / 2.0 - 64000.0;
        let mut var2 = var1 * var1 * p(self.p6) / 32768.0;
        var2 += var1 * p(self.p5) * 2.0;
        var2 = var2 / 4.0 + p(self.p4) * 65536.0;
        var1 = (p(self.p3) * var1 * var1 / 524288.0 + p(self.p2) * var1) / 524288.0;
        var1 = (1.0 + var1 / 32768.0) * f64::from(self.p1);
        if var1 == 0.0 {
            return None;
        }
        let mut pa = 1048576.0 - f64::from(adc_p);
        pa = (pa - var2 / 4096.0) * 6250.0 / var1;
        let var1 = p(self.p9) * pa * pa / 2147483648.0;
        let var2 = pa * p(self.p8) / 32768.0;
        Some(pa + (var1 + var2 + p(self.p7)) / 16.0)
    }

    /// Relative humidity in %, clamped to 0..100.
    pub fn humidity(&self, adc_h: u16, t_fine: i32) -> f64 {
        let h = f64::from(t_fine) - 76800.0;
        let h = (f64::from(adc_h) - (f64::from(self.h4) * 64.0 + f64::from(self.h5) / 16384.0 * h))
            * (f64::from(self.h2) / 65536.0
                * (1.0
                    + f64::from(self.h6) / 67108864.0
                        * h
                        * (1.0 + f64::from(self.h3) / 67108864.0 * h)));
        let h = h * (1.0 - f64::from(self.h1) * h / 524288.0);
        h.clamp(0.0, 100.0)
    }
}

#[derive(Debug, Clone)]
pub struct Bme280 {
    address: u8,
    calibration: Option<Calibration>,
}

impl Bme280 {
    pub fn new(address: u8) -> Bme280 {
        Bme280 {
            address,
            calibration: None,
        }
    }

    /// Checks the chip id (a BMP280 answers 0x58 and has no humidity), resets, reads the
    /// calibration and sets oversampling; ctrl_hum must be written before ctrl_meas.
    pub fn init<I: I2c, D: DelayNs>(&mut self, i2c: &mut I, delay: &mut D) -> Result<()> {
        let a = self.address;
        let mut id = [0u8];
        read_reg(i2c, a, REG_CHIP_ID, &mut id)?;
        if id[0] != CHIP_ID {
            return Err(Error::WrongChip {
                register: REG_CHIP_ID,
                got: id[0].into(),
                expected: "0x60 (BME280; 0x58 is a BMP280)",
            });
        }
        write(i2c, a, &[REG_RESET, RESET_WORD])?;
        delay.delay_ms(RESET_MS);
        let mut tp = [0u8; CALIB_TP_LEN];
        read_reg(i2c, a, REG_CALIB_TP, &mut tp)?;
        let mut h = [0u8; CALIB_H_LEN];
        read_reg(i2c, a, REG_CALIB_H, &mut h)?;
        write(i2c, a, &[REG_CTRL_HUM, CTRL_HUM])?;
        write(i2c, a, &[REG_CONFIG, 0x00])?;
        write(i2c, a, &[REG_CTRL_MEAS, CTRL_MEAS_SLEEP])?;
        self.calibration = Some(Calibration::parse(&tp, &h));
        Ok(())
    }

    pub fn measure<I: I2c, D: DelayNs>(
        &mut self,
        i2c: &mut I,
        delay: &mut D,
    ) -> Result<Vec<Value>> {
        let Some(cal) = self.calibration else {
            return Err(Error::Fault("measured before init".into()));
        };
        let a = self.address;
        write(i2c, a, &[REG_CTRL_MEAS, CTRL_MEAS_FORCED])?;
        delay.delay_ms(MEASURE_MS);
        let mut d = [0u8; 8];
        read_reg(i2c, a, REG_DATA, &mut d)?;
        let adc_p = u32::from(d[0]) << 12 | u32::from(d[1]) << 4 | u32::from(d[2]) >> 4;
        let adc_t = u32::from(d[3]) << 12 | u32::from(d[4]) << 4 | u32::from(d[5]) >> 4;
        let adc_h = u16::from_be_bytes([d[6], d[7]]);
        if adc_t == SKIPPED_20BIT || adc_p == SKIPPED_20BIT {
            return Err(Error::Fault(
                "data registers hold the reset value: no conversion took place".into(),
            ));
        }
        let (t, t_fine) = cal.temperature(adc_t);
        let pa = cal
            .pressure(adc_p, t_fine)
            .ok_or_else(|| Error::Fault("calibration p1 is 0: bad trimming data".into()))?;
        Ok(vec![
            Value::good("temperature", t, "degC"),
            Value::good("humidity", cal.humidity(adc_h, t_fine), "%"),
            Value::good("pressure", pa / 100.0, "hPa"),
        ])
    }
}

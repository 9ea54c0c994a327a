//! ST VL53L0X time-of-flight distance sensor (0x29) looking down at a liquid surface.
//!
//! A small driver: model id check, the stop variable from data init, and single-shot ranging
//! as in ST's API (`PerformSingleRangingMeasurement`). It keeps the chip's power-on tuning; ST's
//! full tuning table and SPAD calibration are not applied.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{level_value, read_reg, write, Error, Result, Value};

pub const REG_SYSRANGE_START: u8 = 0x00;
pub const REG_SYSTEM_INTERRUPT_CLEAR: u8 = 0x0B;
pub const REG_RESULT_INTERRUPT_STATUS: u8 = 0x13;
/// RESULT_RANGE_STATUS (0x14) + 10: the range in mm, big-endian.
pub const REG_RESULT_RANGE_MM: u8 = 0x1E;
pub const REG_MODEL_ID: u8 = 0xC0;
pub const MODEL_ID: u8 = 0xEE;
pub const REG_STOP_VARIABLE: u8 = 0x91;
/// What the chip reports when nothing is in range.
pub const NO_TARGET_MM: u16 = 8190;
const POLL_MS: u32 = 5;
/// A range takes about 30 ms at the default timing budget.
const POLLS: usize = 20;

/// Where the sensor hangs and how high the tank fills.
#[derive(Debug, Clone, PartialEq)]
pub struct MountConfig {
    /// Height of the sensor's window above the tank bottom, in metres.
    pub mount_height_m: f64,
    /// Liquid height that is 100 %, in metres.
    pub tank_height_m: f64,
}

impl MountConfig {
    /// Distance to the surface in mm -> level in %.
    pub fn level(&self, distance_mm: f64) -> f64 {
        let liquid = self.mount_height_m - distance_mm / 1000.0;
        liquid / self.tank_height_m * 100.0
    }
}

#[derive(Debug, Clone)]
pub struct Vl53l0x {
    address: u8,
    pub mount: MountConfig,
    stop_variable: u8,
}

/// The register page dance around the stop variable (ST API, data init and each start).
const PAGE_OPEN: [[u8; 2]; 3] = [[0x80, 0x01], [0xFF, 0x01], [0x00, 0x00]];
const PAGE_CLOSE: [[u8; 2]; 3] = [[0x00, 0x01], [0xFF, 0x00], [0x80, 0x00]];

impl Vl53l0x {
    pub fn new(address: u8, mount: MountConfig) -> Vl53l0x {
        Vl53l0x {
            address,
            mount,
            stop_variable: 0,
        }
    }

    pub fn init<I: I2c>(&mut self, i2c: &mut I) -> Result<()> {
        let a = self.address;
        let mut id = [0u8];
        read_reg(i2c, a, REG_MODEL_ID, &mut id)?;
        if id[0] != MODEL_ID {
            return Err(Error::WrongChip {
                register: REG_MODEL_ID,
                got: id[0].into(),
                expected: "0xEE (VL53L0X)",
            });
        }
        // I2C standard mode.
        write(i2c, a, &[0x88, 0x00])?;
        for w in PAGE_OPEN {
            write(i2c, a, &w)?;
        }
        let mut stop = [0u8];
        read_reg(i2c, a, REG_STOP_VARIABLE, &mut stop)?;
        self.stop_variable = stop[0];
        for w in PAGE_CLOSE {
            write(i2c, a, &w)?;
        }
        Ok(())
    }

    fn wait<I: I2c, D: DelayNs>(
        &self,
        i2c: &mut I,
        delay: &mut D,
        reg: u8,
        done: impl Fn(u8) -> bool,
        what: &str,
    ) -> Result<()> {
        let mut b = [0u8];
        for i in 0..POLLS {
            if i > 0 {
                delay.delay_ms(POLL_MS);
            }
            read_reg(i2c, self.address, reg, &mut b)?;
            if done(b[0]) {
                return Ok(());
            }
        }
        Err(Error::Fault(format!(
            "{what} did not happen within {} ms",
            POLLS as u32 * POLL_MS
        )))
    }

    pub fn measure<I: I2c, D: DelayNs>(
        &mut self,
        i2c: &mut I,
        delay: &mut D,
    ) -> Result<Vec<Value>> {
        let a = self.address;
        for w in PAGE_OPEN {
            write(i2c, a, &w)?;
        }
        write(i2c, a, &[REG_STOP_VARIABLE, self.stop_variable])?;
        for w in PAGE_CLOSE {
            write(i2c, a, &w)?;
        }
        write(i2c, a, &[REG_SYSRANGE_START, 0x01])?;
        self.wait(
            i2c,
            delay,
            REG_SYSRANGE_START,
            |b| b & 0x01 == 0,
            "range start",
        )?;
        self.wait(
            i2c,
            delay,
            REG_RESULT_INTERRUPT_STATUS,
            |b| b & 0x07 != 0,
            "range result",
        )?;
        let mut buf = [0u8; 2];
        read_reg(i2c, a, REG_RESULT_RANGE_MM, &mut buf)?;
        write(i2c, a, &[REG_SYSTEM_INTERRUPT_CLEAR, 0x01])?;
        let mm = u16::from_be_bytes(buf);
        if mm >= NO_TARGET_MM {
            return Err(Error::Fault(format!(
                "no surface in range (sensor reports {mm} mm): tank empty beyond 2 m, or the window is dirty"
            )));
        }
        let mm = f64::from(mm);
        Ok(vec![
            level_value(self.mount.level(mm)),
            Value::good("distance", mm, "mm"),
        ])
    }
}

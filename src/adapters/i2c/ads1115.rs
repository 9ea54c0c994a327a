//! TI ADS1115 16-bit ADC (0x48..0x4B) reading a 4-20 mA level transmitter across a shunt.
//!
//! Current -> head of liquid over the transmitter's span -> level of the tank in %. Outside
//! NAMUR NE43's 3.6..21 mA the loop signals a fault (broken wire, failed transmitter), which is
//! an error, never a reading.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{level_value, read_reg, write, Error, Result, Value};

pub const REG_CONVERSION: u8 = 0x00;
pub const REG_CONFIG: u8 = 0x01;
const OS: u16 = 1 << 15;
/// MUX 100..111: AINx against GND.
const MUX_SINGLE_ENDED: u16 = 0b100;
const MODE_SINGLE_SHOT: u16 = 1 << 8;
/// 128 samples per second: a conversion takes 7.8 ms.
const DR_128SPS: u16 = 0b100 << 5;
const COMP_OFF: u16 = 0b00011;
const CONVERSION_MS: u32 = 9;
const POLLS: usize = 3;

/// NAMUR NE43 limits: outside them the loop reports a fault.
pub const FAULT_LOW_MA: f64 = 3.6;
pub const FAULT_HIGH_MA: f64 = 21.0;

/// How the transmitter is wired and what its range means for the tank.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// AIN0..AIN3 against GND.
    pub channel: u8,
    /// Full-scale range in volts: 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256.
    pub fsr: f64,
    pub shunt_ohms: f64,
    /// Height of liquid over the transmitter that reads 20 mA (4 mA is none), in metres.
    pub span_m: f64,
    /// Height of the transmitter above the tank bottom, in metres.
    pub sensor_offset_m: f64,
    /// Liquid height that is 100 %, in metres.
    pub tank_height_m: f64,
}

pub const FSR_CHOICES: [f64; 6] = [6.144, 4.096, 2.048, 1.024, 0.512, 0.256];

impl LoopConfig {
    /// The PGA bits for `fsr` (checked when the config was loaded).
    fn pga(&self) -> u16 {
        FSR_CHOICES
            .iter()
            .position(|f| (f - self.fsr).abs() < 1e-9)
            .unwrap_or(1) as u16
    }

    /// The config register value that starts one conversion on the configured channel.
    pub fn config_word(&self) -> u16 {
        OS | (MUX_SINGLE_ENDED | u16::from(self.channel & 3)) << 12
            | self.pga() << 9
            | MODE_SINGLE_SHOT
            | DR_128SPS
            | COMP_OFF
    }

    /// Conversion register -> volts.
    pub fn volts(&self, raw: i16) -> f64 {
        f64::from(raw) * self.fsr / 32768.0
    }

    /// Loop current in mA -> level in %; an error outside 3.6..=21 mA.
    pub fn level(&self, ma: f64) -> Result<f64> {
        if ma < FAULT_LOW_MA {
            return Err(Error::Fault(format!(
                "loop current {ma:.2} mA is below {FAULT_LOW_MA} mA: broken wire or dead transmitter (wiring fault, not a reading)"
            )));
        }
        if ma > FAULT_HIGH_MA {
            return Err(Error::Fault(format!(
                "loop current {ma:.2} mA is above {FAULT_HIGH_MA} mA: transmitter fault or short circuit"
            )));
        }
        let head = (ma - 4.0) / 16.0 * self.span_m;
        Ok((self.sensor_offset_m + head) / self.tank_height_m * 100.0)
    }
}

#[derive(Debug, Clone)]
pub struct Ads1115 {
    address: u8,
    pub config: LoopConfig,
}

impl Ads1115 {
    pub fn new(address: u8, config: LoopConfig) -> Ads1115 {
        Ads1115 { address, config }
    }

    /// Reads the config register: the chip answers (any value; a previous owner may have
    /// changed it).
    pub fn init<I: I2c>(&mut self, i2c: &mut I) -> Result<()> {
        let mut buf = [0u8; 2];
        read_reg(i2c, self.address, REG_CONFIG, &mut buf)
    }

    /// One single-shot conversion: start it, wait, poll OS until done, read the result.
    pub fn measure<I: I2c, D: DelayNs>(
        &mut self,
        i2c: &mut I,
        delay: &mut D,
    ) -> Result<Vec<Value>> {
        let a = self.address;
        let [hi, lo] = self.config.config_word().to_be_bytes();
        write(i2c, a, &[REG_CONFIG, hi, lo])?;
        let mut buf = [0u8; 2];
        let mut done = false;
        for _ in 0..POLLS {
            delay.delay_ms(CONVERSION_MS);
            read_reg(i2c, a, REG_CONFIG, &mut buf)?;
            if u16::from_be_bytes(buf) & OS != 0 {
                done = true;
                break;
            }
        }
        if !done {
            return Err(Error::Fault(format!(
                "conversion not finished after {} ms",
                POLLS as u32 * CONVERSION_MS
            )));
        }
        read_reg(i2c, a, REG_CONVERSION, &mut buf)?;
        let volts = self.config.volts(i16::from_be_bytes(buf));
        let ma = volts / self.config.shunt_ohms * 1000.0;
        let level = self.config.level(ma)?;
        Ok(vec![level_value(level), Value::good("current", ma, "mA")])
    }
}

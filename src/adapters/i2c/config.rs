//! Settings of one I2C device.

use std::time::Duration;

use super::ads1115::{LoopConfig, FSR_CHOICES};
use super::vl53l0x::MountConfig;
use crate::config::decode::MapReader;

pub const DEFAULT_BUS: &str = "/dev/i2c-1";

/// The chips we have drivers for, with the addresses each can be strapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Tmp102,
    Mcp9808,
    Sht3x,
    Sht4x,
    Bme280,
    Ads1115,
    Vl53l0x,
}

impl Model {
    pub const ALL: [Model; 7] = [
        Model::Tmp102,
        Model::Mcp9808,
        Model::Sht3x,
        Model::Sht4x,
        Model::Bme280,
        Model::Ads1115,
        Model::Vl53l0x,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::Tmp102 => "tmp102",
            Model::Mcp9808 => "mcp9808",
            Model::Sht3x => "sht3x",
            Model::Sht4x => "sht4x",
            Model::Bme280 => "bme280",
            Model::Ads1115 => "ads1115",
            Model::Vl53l0x => "vl53l0x",
        }
    }

    /// Every address the chip can answer at; the first is its default.
    pub fn addresses(self) -> &'static [u8] {
        match self {
            Model::Tmp102 | Model::Ads1115 => &[0x48, 0x49, 0x4A, 0x4B],
            Model::Mcp9808 => &[0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F],
            Model::Sht3x => &[0x44, 0x45],
            Model::Sht4x => &[0x44, 0x45, 0x46],
            Model::Bme280 => &[0x76, 0x77],
            Model::Vl53l0x => &[0x29],
        }
    }

    pub fn quantities(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Model::Tmp102 | Model::Mcp9808 => vec![("temperature", "degC")],
            Model::Sht3x | Model::Sht4x => vec![("temperature", "degC"), ("humidity", "%")],
            Model::Bme280 => vec![
                ("temperature", "degC"),
                ("humidity", "%"),
                ("pressure", "hPa"),
            ],
            Model::Ads1115 => vec![("level", "%"), ("current", "mA")],
            Model::Vl53l0x => vec![("level", "%"), ("distance", "mm")],
        }
    }
}

/// A model with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Tmp102,
    Mcp9808,
    Sht3x,
    Sht4x,
    Bme280,
    Ads1115(LoopConfig),
    Vl53l0x(MountConfig),
}

impl ModelConfig {
    pub fn model(&self) -> Model {
        match self {
            ModelConfig::Tmp102 => Model::Tmp102,
            ModelConfig::Mcp9808 => Model::Mcp9808,
            ModelConfig::Sht3x => Model::Sht3x,
            ModelConfig::Sht4x => Model::Sht4x,
            ModelConfig::Bme280 => Model::Bme280,
            ModelConfig::Ads1115(_) => Model::Ads1115,
            ModelConfig::Vl53l0x(_) => Model::Vl53l0x,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct I2cConfig {
    /// The bus device, e.g. `/dev/i2c-1`.
    pub bus: String,
    pub address: u8,
    pub model: ModelConfig,
    pub interval: Duration,
}

impl I2cConfig {
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        self.model.model().quantities()
    }
}

/// Decodes a device's `i2c:` section.
///
/// ```yaml
/// i2c:
///   model: sht3x          # tmp102, mcp9808, sht3x, sht4x, bme280, ads1115, vl53l0x
///   bus: /dev/i2c-1       # default
///   address: 0x44         # default: the model's first address
///   interval: 5s
/// ```
pub(crate) fn decode(m: &mut MapReader) -> Option<I2cConfig> {
    m.require(&["model"]);
    let names: Vec<&'static str> = Model::ALL.iter().map(|m| m.name()).collect();
    let model = m
        .one_of("model", &names)
        .and_then(|n| Model::ALL.into_iter().find(|m| m.name() == n));
    let bus = match m.node("bus") {
        None => Some(DEFAULT_BUS.to_string()),
        Some(_) => m.string("bus"),
    };
    if bus.as_deref() == Some("") {
        m.error("bus", "must not be empty");
    }
    let interval = m
        .duration(
            "interval",
            Duration::from_millis(100)..=Duration::from_secs(86_400),
        )
        .unwrap_or(Duration::from_secs(5));
    let Some(model) = model else {
        m.skip_rest();
        return None;
    };
    let address = match m.node("address") {
        None => Some(model.addresses()[0]),
        Some(_) => m.int("address", 0x03..=0x77u8).and_then(|a| {
            if model.addresses().contains(&a) {
                Some(a)
            } else {
                let list: Vec<String> = model
                    .addresses()
                    .iter()
                    .map(|a| format!("0x{a:02X}"))
                    .collect();
                m.error(
                    "address",
                    format!(
                        "a {} answers only at {}, got 0x{a:02X}",
                        model.name(),
                        list.join(", ")
                    ),
                );
                None
            }
        }),
    };
    let model_cfg = match model {
        Model::Tmp102 => Some(ModelConfig::Tmp102),
        Model::Mcp9808 => Some(ModelConfig::Mcp9808),
        Model::Sht3x => Some(ModelConfig::Sht3x),
        Model::Sht4x => Some(ModelConfig::Sht4x),
        Model::Bme280 => Some(ModelConfig::Bme280),
        Model::Ads1115 => decode_loop(m).map(ModelConfig::Ads1115),
        Model::Vl53l0x => decode_mount(m).map(ModelConfig::Vl53l0x),
    };
    Some(I2cConfig {
        bus: bus.filter(|b| !b.is_empty())?,
        address: address?,
        model: model_cfg?,
        interval,
    })
}

const POSITIVE: std::ops::RangeInclusive<f64> = 1e-6..=1e6;

/// ```yaml
///   channel: 0            # AIN0..AIN3
///   fsr: 4.096            # volts; 150 ohm x 20 mA = 3.0 V fits
///   shunt_ohms: 150
///   span_m: 4.0           # head of liquid at 20 mA
///   sensor_offset_m: 0.1  # transmitter height above the bottom
///   tank_height_m: 3.5    # 100 % (default: sensor_offset_m + span_m)
/// ```
fn decode_loop(m: &mut MapReader) -> Option<LoopConfig> {
    m.require(&["shunt_ohms", "span_m"]);
    let channel = m.int("channel", 0..=3u8).unwrap_or(0);
    let fsr = match m.node("fsr") {
        None => Some(4.096),
        Some(_) => m.float("fsr", 0.0..=10.0).and_then(|f| {
            if FSR_CHOICES.iter().any(|c| (c - f).abs() < 1e-9) {
                Some(f)
            } else {
                m.error(
                    "fsr",
                    format!(
                        "must be one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256 (volts), got {f}"
                    ),
                );
                None
            }
        }),
    };
    let shunt = m.float("shunt_ohms", POSITIVE);
    let span = m.float("span_m", POSITIVE);
    let offset = m.float("sensor_offset_m", 0.0..=1e6).unwrap_or(0.0);
    let height = m.float("tank_height_m", POSITIVE);
    if let (Some(shunt), Some(fsr)) = (shunt, fsr) {
        let full = fault_high_volts(shunt);
        if full > fsr {
            m.error(
                "shunt_ohms",
                format!(
                    "21 mA across {shunt} ohm is {full:.3} V, beyond the {fsr} V full scale: use a smaller shunt or a larger fsr"
                ),
            );
            return None;
        }
    }
    let span = span?;
    Some(LoopConfig {
        channel,
        fsr: fsr?,
        shunt_ohms: shunt?,
        span_m: span,
        sensor_offset_m: offset,
        tank_height_m: height.unwrap_or(offset + span),
    })
}

/// The voltage across the shunt at the upper fault limit.
fn fault_high_volts(shunt: f64) -> f64 {
    super::ads1115::FAULT_HIGH_MA / 1000.0 * shunt
}

/// ```yaml
///   mount_height_m: 2.0   # sensor window above the tank bottom
///   tank_height_m: 1.8    # 100 % (default: mount_height_m)
/// ```
fn decode_mount(m: &mut MapReader) -> Option<MountConfig> {
    m.require(&["mount_height_m"]);
    let mount = m.float("mount_height_m", POSITIVE);
    let tank = m.float("tank_height_m", POSITIVE);
    if let (Some(mount), Some(tank)) = (mount, tank) {
        if tank > mount {
            m.error(
                "tank_height_m",
                format!("must be at most mount_height_m ({mount}), got {tank}"),
            );
            return None;
        }
    }
    let mount = mount?;
    Some(MountConfig {
        mount_height_m: mount,
        tank_height_m: tank.unwrap_or(mount),
    })
}

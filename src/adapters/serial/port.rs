//! Serial port settings, opening a port by path, and the timing they imply.

use std::io;
use std::time::Duration;

use crate::config::decode::{Errors, MapReader};
use crate::config::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    None,
    Software,
    Hardware,
}

/// How a port is opened: its path and line settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// Where `port:` is in the config, for errors found across devices.
    pub pos: Pos,
    /// `/dev/ttyUSB0`, `/dev/serial/by-id/...` (stable across replugs), `/dev/ttyAMA0`.
    pub path: String,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl PortSettings {
    /// Whether `other` sets the line up the same way (position in the config aside).
    pub fn same_line(&self, other: &PortSettings) -> bool {
        PortSettings {
            pos: other.pos,
            ..self.clone()
        } == *other
    }

    /// Bits on the wire per character: start, data, parity, stop.
    pub fn char_bits(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// Time one character takes on the wire.
    pub fn char_time(&self) -> Duration {
        Duration::from_nanos(u64::from(self.char_bits()) * 1_000_000_000 / u64::from(self.baud))
    }

    /// Time `bytes` characters take on the wire.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        self.char_time().saturating_mul(bytes as u32)
    }

    /// Modbus RTU's silent interval between frames: 3.5 characters, fixed at 1.75 ms above
    /// 19200 baud (the specification's own rule, so fast lines don't depend on timer precision).
    pub fn frame_gap(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            self.char_time() * 7 / 2
        }
    }

    /// `9600 8N1` style summary for log lines.
    pub fn describe(&self) -> String {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        format!(
            "{} {} {}{}{}",
            self.path, self.baud, self.data_bits, p, self.stop_bits
        )
    }

    /// Opens the port with these settings (non-blocking, for the tokio runtime).
    pub fn open(&self) -> io::Result<tokio_serial::SerialStream> {
        use tokio_serial::SerialPortBuilderExt;
        let data_bits = match self.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        };
        let parity = match self.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let stop_bits = match self.stop_bits {
            2 => tokio_serial::StopBits::Two,
            _ => tokio_serial::StopBits::One,
        };
        let flow = match self.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Software => tokio_serial::FlowControl::Software,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        };
        tokio_serial::new(&self.path, self.baud)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(flow)
            .open_native_async()
            .map_err(io::Error::from)
    }

    /// Why the port could not be opened, with what to do about it.
    pub fn open_error(&self, e: &io::Error) -> String {
        let path = &self.path;
        match e.kind() {
            io::ErrorKind::NotFound => format!(
                "serial port {path} does not exist: unplugged, or another name (ls /dev/serial/by-id/)"
            ),
            io::ErrorKind::PermissionDenied => format!(
                "serial port {path}: permission denied: add the service user to the `dialout` group"
            ),
            _ => format!("serial port {path}: cannot open: {e}"),
        }
    }
}

/// Decodes the port keys shared by the `serial` and `modbus` sections:
///
/// ```yaml
/// port: /dev/ttyUSB0    # required
/// baud: 9600            # default 9600
/// data_bits: 8          # 5..8, default 8
/// parity: none          # none | even | odd
/// stop_bits: 1          # 1 | 2
/// flow_control: none    # none | software | hardware
/// ```
pub(crate) fn decode(m: &mut MapReader) -> Option<PortSettings> {
    m.require(&["port"]);
    let pos = m.value_pos("port").unwrap_or(m.pos());
    let path = m.string("port");
    if path.as_deref() == Some("") {
        m.error("port", "must not be empty");
    }
    let baud = m.int("baud", 50..=4_000_000u32).unwrap_or(9600);
    let data_bits = m.int("data_bits", 5..=8u8).unwrap_or(8);
    let parity = match m.one_of("parity", &["none", "even", "odd"]) {
        Some("even") => Parity::Even,
        Some("odd") => Parity::Odd,
        _ => Parity::None,
    };
    let stop_bits = m.int("stop_bits", 1..=2u8).unwrap_or(1);
    let flow_control = match m.one_of("flow_control", &["none", "software", "hardware"]) {
        Some("software") => FlowControl::Software,
        Some("hardware") => FlowControl::Hardware,
        _ => FlowControl::None,
    };
    Some(PortSettings {
        pos,
        path: path.filter(|p| !p.is_empty())?,
        baud,
        data_bits,
        parity,
        stop_bits,
        flow_control,
    })
}

/// Ports shared across devices: a port serves one line or frame device, or any number of
/// Modbus devices with the same line settings. Called once every device is decoded.
pub(crate) fn check_shared(devices: &[crate::adapters::DeviceConfig], errs: &mut Errors) {
    use crate::adapters::AdapterConfig;
    let mut seen: Vec<(&PortSettings, &str, &str)> = Vec::new();
    for d in devices {
        let (port, kind) = match &d.adapter {
            AdapterConfig::Serial(c) => (&c.port, "serial"),
            AdapterConfig::Modbus(c) => (&c.port, "modbus"),
            _ => continue,
        };
        let Some((first, first_id, first_kind)) = seen.iter().find(|(p, _, _)| p.path == port.path)
        else {
            seen.push((port, &d.id, kind));
            continue;
        };
        let at = format!("devices.{}.{kind}.port", d.id);
        if kind != "modbus" || *first_kind != "modbus" {
            errs.push(
                port.pos,
                format!(
                    "{at}: {} is already the port of device `{first_id}`; a port serves one line or frame device, or Modbus devices only",
                    port.path
                ),
            );
        } else if !first.same_line(port) {
            errs.push(
                port.pos,
                format!(
                    "{at}: {} here, but {} for device `{first_id}` on the same line; devices on one RS-485 line share its settings",
                    port.describe(),
                    first.describe()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(baud: u32, parity: Parity) -> PortSettings {
        PortSettings {
            pos: Pos::new(1, 1),
            path: "/dev/ttyUSB0".into(),
            baud,
            data_bits: 8,
            parity,
            stop_bits: 1,
            flow_control: FlowControl::None,
        }
    }

    #[test]
    fn gap_is_three_and_a_half_characters_up_to_19200() {
        // 8E1 is 11 bits: 3.5 x 11 / 9600 = 4.01 ms.
        let p = port(9600, Parity::Even);
        assert_eq!(p.char_bits(), 11);
        assert_eq!(p.frame_gap().as_micros(), 4010);
        assert_eq!(
            port(115_200, Parity::None).frame_gap(),
            Duration::from_micros(1750)
        );
    }
}

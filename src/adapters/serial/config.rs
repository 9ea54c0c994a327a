//! Settings of one line or frame device (`serial:` section).

use std::time::Duration;

use super::frame::{Checksum, FieldType, FrameField, FrameSpec, Size, TankGeometry};
use super::intern;
use super::line::{Format, LineField, LineSpec, Pattern, Source};
use super::port::{self, PortSettings};
use crate::config::decode::MapReader;

#[derive(Debug, Clone, PartialEq)]
pub enum Protocol {
    Line(LineSpec),
    Frame(FrameSpec),
    /// DFRobot A02YYUW ultrasonic distance, with level when the tank geometry is given.
    A02yyuw(Option<TankGeometry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SerialConfig {
    pub port: PortSettings,
    /// The sensor's reporting period: at most one value per quantity per interval is passed on
    /// (0 passes all), and the device is stale after three intervals without one.
    pub interval: Duration,
    pub protocol: Protocol,
}

impl SerialConfig {
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        match &self.protocol {
            Protocol::Line(s) => s
                .fields
                .iter()
                .map(|f| (f.quantity, f.unit.unwrap_or("")))
                .collect(),
            Protocol::Frame(s) => s
                .fields
                .iter()
                .map(|f| (f.quantity, f.unit.unwrap_or("")))
                .collect(),
            Protocol::A02yyuw(tank) => {
                let mut q = vec![("distance", "mm")];
                if tank.is_some() {
                    q.push(("level", "%"));
                }
                q
            }
        }
    }
}

/// A quantity name from the config; it becomes a topic level.
pub(crate) fn quantity_problem(q: &str) -> Option<&'static str> {
    if q.is_empty() || q.len() > 64 {
        Some("a quantity name must be 1 to 64 characters")
    } else if q
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '+' | '#' | '{' | '}'))
    {
        Some("a quantity name must not contain spaces, `/`, `+`, `#`, `{` or `}`")
    } else {
        None
    }
}

/// Decodes a device's `serial:` section: the port keys (see [`port::decode`]), then
///
/// ```yaml
/// interval: 1s            # default 1s; 0s passes every value
/// protocol: line          # line | frame | a02yyuw
/// ```
/// and the protocol's own keys (see the README's "Serial sensors").
pub(crate) fn decode(m: &mut MapReader) -> Option<SerialConfig> {
    m.require(&["protocol"]);
    let port = port::decode(m);
    let interval = m
        .duration("interval", Duration::ZERO..=Duration::from_secs(86_400))
        .unwrap_or(Duration::from_secs(1));
    let protocol = match m.one_of("protocol", &["line", "frame", "a02yyuw"]) {
        Some("line") => decode_line(m).map(Protocol::Line),
        Some("frame") => decode_frame(m).map(Protocol::Frame),
        Some("a02yyuw") => decode_tank(m).map(Protocol::A02yyuw),
        _ => {
            m.skip_rest();
            None
        }
    };
    Some(SerialConfig {
        port: port?,
        interval,
        protocol: protocol?,
    })
}

/// ```yaml
/// format: regex           # regex | key_value | csv | nmea
/// pattern: '^R(?P<distance>\d+)$'   # regex only
/// delimiter: ","          # csv only
/// sentence: WIMDA         # nmea only: other sentences are ignored
/// max_line: 256
/// fields:
///   distance: { unit: mm }            # regex, key_value: capture/key = quantity, or `key:`
///   temperature: { column: 2, unit: degC }   # csv, nmea (column 0 = sentence id)
/// ```
fn decode_line(m: &mut MapReader) -> Option<LineSpec> {
    m.require(&["format", "fields"]);
    let format_name = m.one_of("format", &["regex", "key_value", "csv", "nmea"]);
    let format = match format_name {
        Some("regex") => {
            m.require(&["pattern"]);
            m.parse_with("pattern", "a regular expression", |s| {
                regex::Regex::new(s)
                    .map(|r| Format::Regex(Pattern(r)))
                    .map_err(|e| format!("not a valid regular expression: {e}"))
            })
        }
        Some("key_value") => Some(Format::KeyValue),
        Some("csv") => {
            let d = m.string("delimiter").unwrap_or_else(|| ",".into());
            let mut chars = d.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(Format::Csv { delimiter: c }),
                _ => {
                    m.error("delimiter", format!("must be one character, got {d:?}"));
                    None
                }
            }
        }
        Some("nmea") => Some(Format::Nmea {
            sentence: m.string("sentence"),
        }),
        _ => None,
    };
    let max_line = m.int("max_line", 8..=65_536usize).unwrap_or(256);
    let by_column = matches!(format_name, Some("csv" | "nmea"));
    let captures: Option<Vec<String>> = match &format {
        Some(Format::Regex(p)) => Some(p.0.capture_names().flatten().map(String::from).collect()),
        _ => None,
    };
    let mut fields = Vec::new();
    let mut ok = format.is_some();
    let mut fm = m.map("fields")?;
    fm.for_each_map(|q, f| {
        if let Some(p) = quantity_problem(q.value) {
            let msg = format!("{}: {p}", f.path());
            f.errors().push(q.pos, msg);
            ok = false;
        }
        let unit = f.string("unit").map(|u| intern(&u));
        let source = if by_column {
            f.require(&["column"]);
            f.int("column", 0..=1024usize).map(Source::Column)
        } else {
            let key = f.string("key").unwrap_or_else(|| q.value.to_string());
            if let Some(names) = &captures {
                if !names.contains(&key) {
                    let msg = format!(
                        "{}: the pattern has no capture group `(?P<{key}>...)`",
                        f.path()
                    );
                    f.errors().push(q.pos, msg);
                    ok = false;
                }
            }
            Some(Source::Name(key))
        };
        match source {
            Some(source) => fields.push(LineField {
                quantity: intern(q.value),
                source,
                unit,
            }),
            None => ok = false,
        }
    });
    if fields.is_empty() && ok {
        let pos = fm.pos();
        let msg = format!("{}: list at least one field", fm.path());
        fm.errors().push(pos, msg);
        ok = false;
    }
    drop(fm);
    ok.then_some(LineSpec {
        format: format?,
        fields,
        max_line,
    })
}

/// ```yaml
/// header: "AA 55"         # hex bytes that start every frame
/// length: 9               # fixed size, or:
/// length_field: { offset: 2, width: 1, adjust: 5 }   # size = field + adjust
/// max_length: 256         # length_field only
/// checksum: crc16_modbus  # none | sum8 | xor8 | crc16_modbus, at the end of the frame
/// checksum_from: 0        # first byte it covers
/// fields:
///   temperature: { offset: 3, type: i16, endian: big, scale: 0.1, unit: degC }
/// ```
fn decode_frame(m: &mut MapReader) -> Option<FrameSpec> {
    m.require(&["fields"]);
    let header = m
        .parse_with("header", "hex bytes", |s| {
            s.split_whitespace()
                .map(|b| {
                    let b = b.trim_start_matches("0x").trim_start_matches("0X");
                    u8::from_str_radix(b, 16)
                        .map_err(|_| format!("expected hex bytes like \"AA 55\", got {s:?}"))
                })
                .collect::<Result<Vec<u8>, String>>()
        })
        .unwrap_or_default();
    let fixed = m.int("length", 1..=4096usize);
    let max_size = m.int("max_length", 2..=4096usize).unwrap_or(256);
    let length_field = match m.map("length_field") {
        Some(mut lf) => {
            lf.require(&["offset"]);
            let offset = lf.int("offset", 0..=4096usize);
            let width = lf.int("width", 1..=2u8).unwrap_or(1);
            if let Some(o) = offset.filter(|o| o + usize::from(width) > max_size) {
                lf.error(
                    "offset",
                    format!("a length field at {o} lies past max_length ({max_size})"),
                );
            }
            let adjust = lf.int("adjust", -4096..=4096i32).unwrap_or(0);
            offset.map(|offset| Size::LengthField {
                offset,
                width,
                adjust,
            })
        }
        None => None,
    };
    let size = match (fixed, length_field) {
        (Some(n), None) => Some(Size::Fixed(n)),
        (None, Some(s)) => Some(s),
        (Some(_), Some(_)) => {
            m.key_error(
                "length_field",
                "give either `length` or `length_field`, not both",
            );
            None
        }
        (None, None) => {
            let pos = m.pos();
            let msg = format!(
                "{}: give the frame size: `length` or `length_field`",
                m.path()
            );
            m.errors().push(pos, msg);
            None
        }
    };
    let checksum = match m.one_of("checksum", Checksum::NAMES) {
        Some("sum8") => Checksum::Sum8,
        Some("xor8") => Checksum::Xor8,
        Some("crc16_modbus") => Checksum::Crc16Modbus,
        _ => Checksum::None,
    };
    let checksum_from = m.int("checksum_from", 0..=4096usize).unwrap_or(0);
    let mut fields = Vec::new();
    let mut ok = true;
    let body_end = match size {
        Some(Size::Fixed(n)) => n.checked_sub(checksum.size()),
        _ => None,
    };
    if let Some(mut fm) = m.map("fields") {
        fm.for_each_map(|q, f| {
            if let Some(p) = quantity_problem(q.value) {
                let msg = format!("{}: {p}", f.path());
                f.errors().push(q.pos, msg);
                ok = false;
            }
            f.require(&["offset", "type"]);
            let offset = f.int("offset", 0..=4096usize);
            let ty = f
                .one_of("type", FieldType::NAMES)
                .and_then(FieldType::from_name);
            let little_endian = f.one_of("endian", &["big", "little"]) == Some("little");
            let scale = f.float("scale", -1e9..=1e9).unwrap_or(1.0);
            let unit = f.string("unit").map(|u| intern(&u));
            match (offset, ty) {
                (Some(offset), Some(ty)) => {
                    if let Some(end) = body_end {
                        if offset + ty.size() > end {
                            f.error(
                                "offset",
                                format!(
                                    "a {}-byte field at {offset} ends past the frame's data (bytes 0..{end})",
                                    ty.size()
                                ),
                            );
                            ok = false;
                        }
                    }
                    fields.push(FrameField {
                        quantity: intern(q.value),
                        offset,
                        ty,
                        little_endian,
                        scale,
                        unit,
                    });
                }
                _ => ok = false,
            }
        });
    }
    if let Some(Size::Fixed(n)) = size {
        if checksum != Checksum::None && checksum_from + checksum.size() > n {
            m.error(
                "checksum_from",
                format!("must leave room for the checksum in a {n}-byte frame"),
            );
            ok = false;
        }
    }
    let spec = FrameSpec {
        header,
        size: size?,
        checksum,
        checksum_from,
        fields,
        max_size: match size? {
            Size::Fixed(n) => n,
            Size::LengthField { .. } => max_size,
        },
    };
    ok.then_some(spec)
}

/// ```yaml
/// mount_height_m: 2.0     # sensor face above the tank bottom (gives `level`)
/// tank_height_m: 1.8      # 100 % (default: mount_height_m)
/// ```
fn decode_tank(m: &mut MapReader) -> Option<Option<TankGeometry>> {
    let positive = 1e-3..=1e3;
    let mount = m.float("mount_height_m", positive.clone());
    let tank = m.float("tank_height_m", positive);
    match (mount, tank) {
        (None, None) => Some(None),
        (None, Some(_)) => {
            m.key_error("tank_height_m", "needs mount_height_m too");
            None
        }
        (Some(mount), tank) => {
            let tank = tank.unwrap_or(mount);
            if tank > mount {
                m.error(
                    "tank_height_m",
                    format!("must be at most mount_height_m ({mount}), got {tank}"),
                );
                return None;
            }
            Some(Some(TankGeometry {
                mount_height_m: mount,
                tank_height_m: tank,
            }))
        }
    }
}

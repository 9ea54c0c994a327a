//! Binary frames: a configurable spec (header, fixed or length-field size, checksum, fields),
//! the DFRobot A02YYUW profile, and a decoder that resynchronises after garbage or a partial
//! frame.

use super::checksum::{crc16_modbus, sum8, xor8};
use super::Sample;
use crate::reading::Quality;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Fixed(usize),
    /// The frame's total length is the field's value plus `adjust` (bytes the count leaves out).
    LengthField {
        offset: usize,
        width: u8,
        adjust: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    None,
    /// One byte at the end: sum of bytes `from..end-1`, modulo 256.
    Sum8,
    /// One byte at the end: XOR of bytes `from..end-1`.
    Xor8,
    /// Two bytes at the end, low byte first: CRC-16/MODBUS of bytes `from..end-2`.
    Crc16Modbus,
}

impl Checksum {
    pub const NAMES: &'static [&'static str] = &["none", "sum8", "xor8", "crc16_modbus"];

    pub fn size(self) -> usize {
        match self {
            Checksum::None => 0,
            Checksum::Sum8 | Checksum::Xor8 => 1,
            Checksum::Crc16Modbus => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl FieldType {
    pub const NAMES: &'static [&'static str] = &["u8", "i8", "u16", "i16", "u32", "i32", "f32"];

    pub fn from_name(n: &str) -> Option<FieldType> {
        let all = [
            FieldType::U8,
            FieldType::I8,
            FieldType::U16,
            FieldType::I16,
            FieldType::U32,
            FieldType::I32,
            FieldType::F32,
        ];
        Self::NAMES.iter().position(|x| *x == n).map(|i| all[i])
    }

    pub fn size(self) -> usize {
        match self {
            FieldType::U8 | FieldType::I8 => 1,
            FieldType::U16 | FieldType::I16 => 2,
            FieldType::U32 | FieldType::I32 | FieldType::F32 => 4,
        }
    }

    /// The value of `b` (exactly `size()` bytes, in big-endian order).
    pub fn value(self, b: &[u8]) -> f64 {
        let mut x = [0u8; 4];
        x[..b.len()].copy_from_slice(b);
        match self {
            FieldType::U8 => f64::from(b[0]),
            FieldType::I8 => f64::from(b[0] as i8),
            FieldType::U16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
            FieldType::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
            FieldType::U32 => f64::from(u32::from_be_bytes(x)),
            FieldType::I32 => f64::from(i32::from_be_bytes(x)),
            FieldType::F32 => f64::from(f32::from_be_bytes(x)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FrameField {
    pub quantity: &'static str,
    pub offset: usize,
    pub ty: FieldType,
    pub little_endian: bool,
    pub scale: f64,
    pub unit: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FrameSpec {
    pub header: Vec<u8>,
    pub size: Size,
    pub checksum: Checksum,
    /// First byte the checksum covers.
    pub checksum_from: usize,
    pub fields: Vec<FrameField>,
    /// Length-field frames longer than this are noise.
    pub max_size: usize,
}

/// A tank under a level sensor that measures the distance down to the surface.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TankGeometry {
    /// Sensor face above the tank bottom.
    pub mount_height_m: f64,
    /// The fill height that is 100 %.
    pub tank_height_m: f64,
}

impl TankGeometry {
    /// Level in percent of the tank height for a measured distance.
    pub fn level(&self, distance_mm: f64) -> f64 {
        (self.mount_height_m - distance_mm / 1000.0) / self.tank_height_m * 100.0
    }
}

/// DFRobot A02YYUW: `FF H L SUM`, SUM = (FF + H + L) & FF, distance mm = H*256 + L.
pub fn a02yyuw() -> FrameSpec {
    FrameSpec {
        header: vec![0xFF],
        size: Size::Fixed(4),
        checksum: Checksum::Sum8,
        checksum_from: 0,
        fields: vec![FrameField {
            quantity: "distance",
            offset: 1,
            ty: FieldType::U16,
            little_endian: false,
            scale: 1.0,
            unit: Some("mm"),
        }],
        max_size: 4,
    }
}

/// The A02YYUW's measuring range; outside it (blind zone, no echo) a value is not trusted.
pub const A02YYUW_RANGE_MM: std::ops::RangeInclusive<f64> = 30.0..=4500.0;

/// Values of an A02YYUW frame: distance, and level when the tank geometry is known.
pub fn a02yyuw_values(distance_mm: f64, tank: Option<&TankGeometry>) -> Vec<Sample> {
    let quality = if A02YYUW_RANGE_MM.contains(&distance_mm) {
        Quality::Good
    } else {
        Quality::OutOfRange
    };
    let mut out = vec![Sample {
        quantity: "distance",
        value: distance_mm,
        unit: Some("mm"),
        quality,
    }];
    if let Some(t) = tank {
        let level = t.level(distance_mm);
        out.push(Sample {
            quantity: "level",
            value: level,
            unit: Some("%"),
            quality: if quality == Quality::Good && (0.0..=100.0).contains(&level) {
                Quality::Good
            } else {
                Quality::OutOfRange
            },
        });
    }
    out
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("{0} bytes of garbage skipped")]
    Garbage(usize),
    #[error("bad frame checksum: received {got:04X}, computed {computed:04X}")]
    Checksum { got: u16, computed: u16 },
    #[error("length field says {0} bytes, not a valid frame size")]
    BadLength(usize),
}

impl FrameSpec {
    /// Total size of the frame starting at `buf[0]`, `None` while the length field is not in.
    fn frame_len(&self, buf: &[u8]) -> Option<Result<usize, FrameError>> {
        match self.size {
            Size::Fixed(n) => Some(Ok(n)),
            Size::LengthField {
                offset,
                width,
                adjust,
            } => {
                let w = usize::from(width);
                let b = buf.get(offset..offset + w)?;
                let raw = if w == 1 {
                    i64::from(b[0])
                } else {
                    i64::from(u16::from_be_bytes([b[0], b[1]]))
                };
                let total = raw + i64::from(adjust);
                let min = self.min_len() as i64;
                Some(if total < min || total > self.max_size as i64 {
                    Err(FrameError::BadLength(total.max(0) as usize))
                } else {
                    Ok(total as usize)
                })
            }
        }
    }

    /// The shortest frame the spec allows: header, checksum, and every field.
    pub fn min_len(&self) -> usize {
        let fields = self
            .fields
            .iter()
            .map(|f| f.offset + f.ty.size())
            .max()
            .unwrap_or(0);
        (self.header.len() + self.checksum.size())
            .max(fields + self.checksum.size())
            .max(self.checksum_from + self.checksum.size())
    }

    fn verify(&self, frame: &[u8]) -> Result<(), FrameError> {
        let n = frame.len();
        let (got, computed) = match self.checksum {
            Checksum::None => return Ok(()),
            Checksum::Sum8 => (
                u16::from(frame[n - 1]),
                u16::from(sum8(&frame[self.checksum_from..n - 1])),
            ),
            Checksum::Xor8 => (
                u16::from(frame[n - 1]),
                u16::from(xor8(&frame[self.checksum_from..n - 1])),
            ),
            Checksum::Crc16Modbus => (
                u16::from_le_bytes([frame[n - 2], frame[n - 1]]),
                crc16_modbus(&frame[self.checksum_from..n - 2]),
            ),
        };
        if got == computed {
            Ok(())
        } else {
            Err(FrameError::Checksum { got, computed })
        }
    }

    /// The spec's fields of a verified frame.
    pub fn values(&self, frame: &[u8]) -> Vec<Sample> {
        self.fields
            .iter()
            .filter_map(|f| {
                let mut b = frame.get(f.offset..f.offset + f.ty.size())?.to_vec();
                if f.little_endian {
                    b.reverse();
                }
                Some(Sample::good(f.quantity, f.ty.value(&b) * f.scale, f.unit))
            })
            .collect()
    }
}

/// Finds frames in a byte stream. Bytes before a header are garbage; a frame whose checksum or
/// length is wrong is not trusted, and the search goes on from its second byte (a real frame
/// may start inside a partial one).
#[derive(Debug)]
pub struct FrameDecoder {
    spec: FrameSpec,
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(spec: FrameSpec) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::with_capacity(spec.max_size * 2),
            spec,
        }
    }

    pub fn spec(&self) -> &FrameSpec {
        &self.spec
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame (its bytes), an error, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        let h = &self.spec.header;
        let start = if h.is_empty() {
            0
        } else {
            match self.buf.windows(h.len()).position(|w| w == h.as_slice()) {
                Some(i) => i,
                // Keep what could be the start of a header.
                None => {
                    let keep = (h.len() - 1).min(self.buf.len());
                    let skipped = self.buf.len() - keep;
                    let tail = self.buf.split_off(skipped);
                    self.buf = tail;
                    return (skipped > 0).then_some(Err(FrameError::Garbage(skipped)));
                }
            }
        };
        if start > 0 {
            self.buf.drain(..start);
            return Some(Err(FrameError::Garbage(start)));
        }
        let len = match self.spec.frame_len(&self.buf)? {
            Ok(n) => n,
            Err(e) => {
                self.buf.drain(..1);
                return Some(Err(e));
            }
        };
        if self.buf.len() < len {
            return None;
        }
        if let Err(e) = self.spec.verify(&self.buf[..len]) {
            self.buf.drain(..1);
            return Some(Err(e));
        }
        Some(Ok(self.buf.drain(..len).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a02yyuw_worked_example() {
        let mut d = FrameDecoder::new(a02yyuw());
        d.push(&[0xFF, 0x07, 0xA1, 0xA7]);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(d.spec().values(&f)[0].value, 1953.0);
        assert_eq!(d.next_frame(), None);
    }

    #[test]
    fn partial_frame_then_whole_one() {
        let mut d = FrameDecoder::new(a02yyuw());
        d.push(&[0xFF, 0x07, 0xFF, 0x07, 0xA1, 0xA7]);
        let mut got = Vec::new();
        while let Some(r) = d.next_frame() {
            got.push(r);
        }
        assert_eq!(
            got,
            [
                Err(FrameError::Checksum {
                    got: 0x07,
                    computed: 0x05
                }),
                Err(FrameError::Garbage(1)),
                Ok(vec![0xFF, 0x07, 0xA1, 0xA7])
            ]
        );
    }
}

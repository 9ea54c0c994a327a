//! A slave's register map (`modbus:` section): which registers hold which quantity, and how
//! they are read in as few requests as possible.

use std::time::Duration;

use super::super::config::quantity_problem;
use super::super::port::{self, PortSettings};
use super::super::{intern, Sample};
use super::rtu::{Request, Table};
use crate::config::decode::MapReader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl RegType {
    pub const NAMES: &'static [&'static str] = &["bool", "u16", "i16", "u32", "i32", "f32"];

    fn from_name(n: &str) -> Option<RegType> {
        Some(match n {
            "bool" => RegType::Bool,
            "u16" => RegType::U16,
            "i16" => RegType::I16,
            "u32" => RegType::U32,
            "i32" => RegType::I32,
            "f32" => RegType::F32,
            _ => return None,
        })
    }

    /// Registers (or bits) the value spans.
    pub fn width(self) -> u16 {
        match self {
            RegType::Bool | RegType::U16 | RegType::I16 => 1,
            RegType::U32 | RegType::I32 | RegType::F32 => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub quantity: &'static str,
    pub table: Table,
    pub address: u16,
    pub ty: RegType,
    /// For 32-bit values: the low word comes first (vendors differ; big = high word first).
    pub low_word_first: bool,
    pub scale: f64,
    pub unit: Option<&'static str>,
}

impl Point {
    /// The value from its registers (`words`, in address order).
    pub fn value(&self, words: &[u16]) -> f64 {
        let (hi, lo) = match (self.ty.width(), self.low_word_first) {
            (1, _) => (0, words[0]),
            (_, false) => (words[0], words[1]),
            (_, true) => (words[1], words[0]),
        };
        let both = (u32::from(hi) << 16) | u32::from(lo);
        let raw = match self.ty {
            RegType::Bool => f64::from(u8::from(lo != 0)),
            RegType::U16 => f64::from(lo),
            RegType::I16 => f64::from(lo as i16),
            RegType::U32 => f64::from(both),
            RegType::I32 => f64::from(both as i32),
            RegType::F32 => f64::from(f32::from_bits(both)),
        };
        raw * self.scale
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusConfig {
    pub port: PortSettings,
    pub slave: u8,
    pub interval: Duration,
    /// How long to wait for each response.
    pub timeout: Duration,
    /// Further attempts of a request that failed, before the poll counts as failed.
    pub retries: u8,
    pub points: Vec<Point>,
}

impl ModbusConfig {
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        self.points
            .iter()
            .map(|p| (p.quantity, p.unit.unwrap_or("")))
            .collect()
    }

    /// The requests one poll makes: contiguous points of a table share one request (registers
    /// between points are not read: some slaves answer those with an exception).
    pub fn requests(&self) -> Vec<Request> {
        let mut spans: Vec<(Table, u32, u32)> = self
            .points
            .iter()
            .map(|p| {
                let first = u32::from(p.address);
                (p.table, first, first + u32::from(p.ty.width()))
            })
            .collect();
        spans.sort();
        let mut out: Vec<Request> = Vec::new();
        for (table, first, end) in spans {
            if let Some(r) = out.last_mut() {
                let start = u32::from(r.address);
                let r_end = start + u32::from(r.count);
                let new_end = r_end.max(end);
                if r.table == table
                    && first <= r_end
                    && new_end - start <= u32::from(table.max_count())
                {
                    r.count = (new_end - start) as u16;
                    continue;
                }
            }
            out.push(Request {
                slave: self.slave,
                table,
                address: first as u16,
                count: (end - first) as u16,
            });
        }
        out
    }

    /// The values of every point, given each request's answer (same order as [`requests`]).
    pub fn samples(&self, answers: &[(Request, Vec<u16>)]) -> Vec<Sample> {
        self.points
            .iter()
            .filter_map(|p| {
                let (req, words) = answers.iter().find(|(r, _)| {
                    r.table == p.table
                        && r.address <= p.address
                        && u32::from(p.address) + u32::from(p.ty.width())
                            <= u32::from(r.address) + u32::from(r.count)
                })?;
                let at = usize::from(p.address - req.address);
                let words = words.get(at..at + usize::from(p.ty.width()))?;
                Some(Sample::good(p.quantity, p.value(words), p.unit))
            })
            .collect()
    }
}

/// Decodes a device's `modbus:` section: the port keys, then
///
/// ```yaml
/// slave: 1                # 1..247
/// interval: 5s
/// timeout: 300ms          # per request
/// retries: 1
/// registers:
///   level: { table: holding, address: 0, type: u16, scale: 0.1, unit: "%" }
///   flow: { table: input, address: 4, type: f32, word_order: little, unit: m3/h }
///   pump_on: { table: coil, address: 0 }
/// ```
pub(crate) fn decode(m: &mut MapReader) -> Option<ModbusConfig> {
    m.require(&["slave", "registers"]);
    let port = port::decode(m);
    let slave = m.int("slave", 1..=247u8);
    let interval = m
        .duration(
            "interval",
            Duration::from_millis(10)..=Duration::from_secs(86_400),
        )
        .unwrap_or(Duration::from_secs(5));
    let timeout = m
        .duration(
            "timeout",
            Duration::from_millis(10)..=Duration::from_secs(10),
        )
        .unwrap_or(Duration::from_millis(300));
    let retries = m.int("retries", 0..=5u8).unwrap_or(1);
    let mut points = Vec::new();
    let mut ok = true;
    if let Some(mut rm) = m.map("registers") {
        rm.for_each_map(|q, r| {
            if let Some(p) = quantity_problem(q.value) {
                let msg = format!("{}: {p}", r.path());
                r.errors().push(q.pos, msg);
                ok = false;
            }
            r.require(&["address"]);
            let table = r
                .one_of("table", Table::NAMES)
                .and_then(Table::from_name)
                .unwrap_or(Table::Holding);
            let address = r.int("address", 0..=65_535u16);
            let default_ty = if table.is_bits() { "bool" } else { "u16" };
            let ty = match r.one_of("type", RegType::NAMES) {
                Some(t) => RegType::from_name(t),
                None => RegType::from_name(default_ty),
            };
            let low_word_first = r.one_of("word_order", &["big", "little"]) == Some("little");
            let scale = r.float("scale", -1e9..=1e9).unwrap_or(1.0);
            let unit = r.string("unit").map(|u| intern(&u));
            if let Some(ty) = ty {
                if table.is_bits() != (ty == RegType::Bool) {
                    let what = if table.is_bits() {
                        "coils and discrete inputs are `bool`"
                    } else {
                        "a `bool` is read from a coil or discrete input"
                    };
                    r.error("type", what);
                    ok = false;
                }
                if let Some(a) = address {
                    if u32::from(a) + u32::from(ty.width()) > 65_536 {
                        r.error("address", "the value runs past register 65535");
                        ok = false;
                    }
                }
            }
            match (address, ty) {
                (Some(address), Some(ty)) => points.push(Point {
                    quantity: intern(q.value),
                    table,
                    address,
                    ty,
                    low_word_first,
                    scale,
                    unit,
                }),
                _ => ok = false,
            }
        });
        if points.is_empty() && ok {
            let pos = rm.pos();
            let msg = format!("{}: list at least one register", rm.path());
            rm.errors().push(pos, msg);
            ok = false;
        }
    }
    ok.then_some(ModbusConfig {
        port: port?,
        slave: slave?,
        interval,
        timeout,
        retries,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(table: Table, address: u16, ty: RegType) -> Point {
        Point {
            quantity: "q",
            table,
            address,
            ty,
            low_word_first: false,
            scale: 1.0,
            unit: None,
        }
    }

    #[test]
    fn contiguous_points_share_a_request() {
        let cfg = ModbusConfig {
            port: PortSettings {
                pos: crate::config::yaml::Pos::new(1, 1),
                path: "/dev/ttyUSB0".into(),
                baud: 9600,
                data_bits: 8,
                parity: super::super::super::port::Parity::None,
                stop_bits: 1,
                flow_control: super::super::super::port::FlowControl::None,
            },
            slave: 3,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(100),
            retries: 0,
            points: vec![
                point(Table::Holding, 2, RegType::F32),
                point(Table::Holding, 0, RegType::U16),
                point(Table::Holding, 1, RegType::I16),
                point(Table::Holding, 10, RegType::U16),
                point(Table::Input, 4, RegType::U32),
                point(Table::Coils, 0, RegType::Bool),
            ],
        };
        let got: Vec<(Table, u16, u16)> = cfg
            .requests()
            .iter()
            .map(|r| (r.table, r.address, r.count))
            .collect();
        assert_eq!(
            got,
            [
                (Table::Coils, 0, 1),
                (Table::Holding, 0, 4),
                (Table::Holding, 10, 1),
                (Table::Input, 4, 2)
            ]
        );
    }

    #[test]
    fn word_orders_and_types() {
        let mut p = point(Table::Holding, 0, RegType::F32);
        // 21.5 = 0x41AC0000
        assert_eq!(p.value(&[0x41AC, 0x0000]), 21.5);
        p.low_word_first = true;
        assert_eq!(p.value(&[0x0000, 0x41AC]), 21.5);
        p.ty = RegType::I32;
        assert_eq!(p.value(&[0xFFFE, 0xFFFF]), -2.0);
        let mut p = point(Table::Holding, 0, RegType::I16);
        p.scale = 0.1;
        assert!((p.value(&[0xFF38]) - -20.0).abs() < 1e-9);
    }
}

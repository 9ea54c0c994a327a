//! The one type every southbound adapter produces.

use std::time::SystemTime;

/// How far a value can be trusted. Serialized in payloads as snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    OutOfRange,
    Stale,
    ClockUnsynced,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::OutOfRange => "out_of_range",
            Quality::Stale => "stale",
            Quality::ClockUnsynced => "clock_unsynced",
        }
    }
}

/// A raw measurement as an adapter saw it, before scaling, range checks and topic mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: String,
    pub quantity: String,
    pub value: f64,
    /// The unit the adapter measured in; a point's configured unit overrides it.
    pub unit: Option<&'static str>,
    pub ts: SystemTime,
    pub quality: Quality,
}

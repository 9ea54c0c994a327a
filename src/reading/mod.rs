//! The one type every southbound adapter produces, and what a reading carries past normalize:
//! its origin and its payload's fields ([`payload`]), which normalize and the outbox share.

pub mod payload;

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

/// What a message is to the buffer's caps: telemetry may be dropped (oldest first) when the
/// buffer is full; alarms never are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Telemetry = 0,
    Alarm = 1,
}

impl Class {
    pub fn from_i64(v: i64) -> Class {
        if v == 1 {
            Class::Alarm
        } else {
            Class::Telemetry
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Telemetry => "telemetry",
            Class::Alarm => "alarm",
        }
    }
}

/// What the gateway knows about one of its own messages where it makes it (normalize, device
/// and gateway status), carried on the bus beside topic and payload so the outbox never reads
/// it back out of them. Messages from on-site clients have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub class: Class,
    /// The device it is about; empty for the gateway's own status.
    pub device: String,
    /// A reading's fields, from which its payload was rendered: the outbox keeps these instead
    /// of the payload.
    pub sample: Option<crate::reading::payload::Sample>,
}

impl Origin {
    /// A status change of `device` (empty: of the gateway), which the caps never drop.
    pub fn status(device: &str) -> std::sync::Arc<Origin> {
        std::sync::Arc::new(Origin {
            class: Class::Alarm,
            device: device.to_string(),
            sample: None,
        })
    }
}

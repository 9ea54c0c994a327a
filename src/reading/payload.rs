//! A reading's payload: its fields ([`Sample`]) and their JSON. The outbox keeps the fields of a
//! reading it has to write and renders the payload again when it sends the row, so the rendering
//! lives here, once, and must give the same bytes for the same fields.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Quality;

/// A reading as published: normalized value and everything else its payload says.
#[derive(Debug, Clone)]
pub struct Sample {
    pub value: f64,
    pub unit: Option<String>,
    /// Acquisition time, Unix milliseconds (the payload's `ts` has millisecond precision).
    pub ts_ms: i64,
    pub quality: Quality,
    pub seq: u64,
    /// Only on the reading that crosses a threshold: `low`, `high`, or `clear` on the way back.
    pub alarm: Option<Alarm>,
}

/// Bit-for-bit: the outbox must rebuild exactly the payload it was given.
impl PartialEq for Sample {
    fn eq(&self, o: &Sample) -> bool {
        self.value.to_bits() == o.value.to_bits()
            && (&self.unit, self.ts_ms, self.quality, self.seq, self.alarm)
                == (&o.unit, o.ts_ms, o.quality, o.seq, o.alarm)
    }
}

impl Eq for Sample {}

/// Where a value stands against a point's alarm thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    Clear,
    Low,
    High,
}

impl Alarm {
    pub fn as_str(self) -> &'static str {
        match self {
            Alarm::Clear => "clear",
            Alarm::Low => "low",
            Alarm::High => "high",
        }
    }

    /// Small code for storage: 0 is "no alarm field".
    pub fn code(a: Option<Alarm>) -> u8 {
        match a {
            None => 0,
            Some(Alarm::Clear) => 1,
            Some(Alarm::Low) => 2,
            Some(Alarm::High) => 3,
        }
    }

    pub fn from_code(c: u8) -> Option<Option<Alarm>> {
        Some(match c {
            0 => None,
            1 => Some(Alarm::Clear),
            2 => Some(Alarm::Low),
            3 => Some(Alarm::High),
            _ => return None,
        })
    }
}

#[derive(Serialize)]
struct Json<'a> {
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    ts: String,
    quality: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    alarm: Option<&'static str>,
}

impl Sample {
    /// Unix milliseconds of `ts`; a time before 1970 (a clock gone wrong) counts as 1970, which
    /// RFC 3339 formatting needs.
    pub fn ms_of(ts: SystemTime) -> i64 {
        ts.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
    }

    fn ts(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.ts_ms.max(0) as u64)
    }

    /// The payload: `{"value":..,"unit":..,"ts":..,"quality":..,"seq":..,"alarm":..}`. `None`
    /// only if the value is not a number, which normalize never lets through.
    pub fn to_json(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(&Json {
            value: self.value,
            unit: self.unit.as_deref(),
            ts: humantime::format_rfc3339_millis(self.ts()).to_string(),
            quality: self.quality.as_str(),
            seq: self.seq,
            alarm: self.alarm.map(Alarm::as_str),
        })
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_of_a_sample() {
        let s = Sample {
            value: 21.53,
            unit: Some("degC".into()),
            ts_ms: 1_795_341_600_123,
            quality: Quality::Good,
            seq: 1842,
            alarm: None,
        };
        assert_eq!(
            String::from_utf8(s.to_json().unwrap()).unwrap(),
            r#"{"value":21.53,"unit":"degC","ts":"2026-11-22T10:00:00.123Z","quality":"good","seq":1842}"#
        );
        let s = Sample {
            unit: None,
            alarm: Some(Alarm::High),
            quality: Quality::OutOfRange,
            ..s
        };
        assert_eq!(
            String::from_utf8(s.to_json().unwrap()).unwrap(),
            r#"{"value":21.53,"ts":"2026-11-22T10:00:00.123Z","quality":"out_of_range","seq":1842,"alarm":"high"}"#
        );
    }

    #[test]
    fn milliseconds_round_trip_and_1970_is_the_floor() {
        for ms in [0, 1, 1_795_341_600_123] {
            let s = Sample {
                value: 0.0,
                unit: None,
                ts_ms: ms,
                quality: Quality::ClockUnsynced,
                seq: 1,
                alarm: None,
            };
            assert_eq!(Sample::ms_of(s.ts()), ms);
        }
        let at = UNIX_EPOCH + Duration::from_nanos(1_795_341_600_123_999_999);
        assert_eq!(Sample::ms_of(at), 1_795_341_600_123);
        assert_eq!(Sample::ms_of(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}

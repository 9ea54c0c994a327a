//! Small rows for readings: a row the outbox has to write for one of the gateway's own readings
//! keeps its fields (value, time, quality, seq, alarm) and an interned id of its topic, device
//! and unit instead of topic and JSON; the payload is rendered again, byte for byte, when the row
//! is read. A row is about 45 bytes instead of about 150, so an outage costs fewer pages per
//! commit. Anything else (what clients publish, status changes) is written whole.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::Outgoing;
use crate::reading::payload::{Alarm, Sample};
use crate::reading::Quality;

/// Interned (topic, device, unit) triples, at most this many: they are never deleted, and the
/// count is bounded by the site's points, so this only stops a runaway (a reading's topic built
/// from something unbounded) from growing the table; past it, rows are written whole.
const MAX_TOPICS: usize = 10_000;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub topic: String,
    pub device: String,
    pub unit: Option<String>,
}

/// The `topics` table in memory.
#[derive(Default)]
pub struct Topics {
    ids: HashMap<Arc<Key>, i64>,
    keys: HashMap<i64, Arc<Key>>,
}

/// The fields of a small row, as inserted.
pub struct Fields {
    pub topic_id: i64,
    pub value: f64,
    pub lag: i64,
    pub seq: i64,
    pub flags: i64,
    /// What the whole message counts for against `max_bytes`.
    pub size: i64,
}

impl Topics {
    pub fn load(conn: &Connection) -> rusqlite::Result<Topics> {
        let mut t = Topics::default();
        let mut stmt = conn.prepare("SELECT id, topic, device, unit FROM topics")?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let key = Arc::new(Key {
                topic: r.get(1)?,
                device: r.get(2)?,
                unit: r.get(3)?,
            });
            let id: i64 = r.get(0)?;
            t.ids.insert(key.clone(), id);
            t.keys.insert(id, key);
        }
        Ok(t)
    }

    /// The small-row fields of `m` (created at `created_ms`), interning its topic in `conn`'s
    /// transaction if it is new; `None` when `m` is to be written whole.
    pub fn fields(
        &mut self,
        conn: &Connection,
        m: &Outgoing,
        created_ms: i64,
    ) -> rusqlite::Result<Option<Fields>> {
        let Some(s) = &m.sample else {
            return Ok(None);
        };
        let (Ok(seq), Some(lag)) = (i64::try_from(s.seq), created_ms.checked_sub(s.ts_ms)) else {
            return Ok(None);
        };
        debug_assert_eq!(s.to_json().as_deref(), Some(&m.payload[..]));
        let key = Key {
            topic: m.topic.clone(),
            device: m.device.clone(),
            unit: s.unit.clone(),
        };
        let topic_id = match self.ids.get(&key) {
            Some(id) => *id,
            None if self.ids.len() >= MAX_TOPICS => return Ok(None),
            None => {
                conn.prepare_cached(
                    "INSERT INTO topics (topic, device, unit) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![key.topic, key.device, key.unit])?;
                let id = conn.last_insert_rowid();
                let key = Arc::new(key);
                self.ids.insert(key.clone(), id);
                self.keys.insert(id, key);
                id
            }
        };
        Ok(Some(Fields {
            topic_id,
            value: s.value,
            lag,
            seq,
            flags: flags(s.quality, s.alarm),
            size: (m.topic.len() + m.payload.len()) as i64,
        }))
    }

    /// Forgets what a rolled-back transaction interned.
    pub fn forget_from(&mut self, first_new: i64) {
        self.keys.retain(|id, _| *id < first_new);
        self.ids.retain(|_, id| *id < first_new);
    }

    pub fn next_id(&self) -> i64 {
        self.keys.keys().max().map_or(1, |m| m + 1)
    }

    /// Device of an interned topic id.
    pub fn device(&self, id: i64) -> Option<&str> {
        self.keys.get(&id).map(|k| k.device.as_str())
    }

    /// Topic, device and payload of a small row from its columns (`topic_id, value, lag, seq, flags`
    /// from `first` on), or `None` for a
    /// row written whole. An unknown topic id or a bad code is an error: the row cannot be sent.
    pub fn rebuild(
        &self,
        r: &rusqlite::Row<'_>,
        first: usize,
        created_ms: i64,
    ) -> rusqlite::Result<Option<(String, String, Vec<u8>)>> {
        let Some(topic_id) = r.get::<_, Option<i64>>(first)? else {
            return Ok(None);
        };
        let bad = |what: &str| {
            rusqlite::Error::FromSqlConversionFailure(
                first,
                rusqlite::types::Type::Integer,
                format!("outbox row with {what}").into(),
            )
        };
        let key = self
            .keys
            .get(&topic_id)
            .ok_or_else(|| bad(&format!("unknown topic id {topic_id}")))?;
        let value = match r.get::<_, Value>(first + 1)? {
            Value::Real(v) => v,
            Value::Integer(v) => v as f64,
            _ => return Err(bad("no value")),
        };
        let lag: i64 = r.get(first + 2)?;
        let seq: i64 = r.get(first + 3)?;
        let flags: i64 = r.get(first + 4)?;
        let (quality, alarm) = unflags(flags).ok_or_else(|| bad(&format!("flags {flags}")))?;
        let sample = Sample {
            value,
            unit: key.unit.clone(),
            ts_ms: created_ms.saturating_sub(lag),
            quality,
            seq: seq as u64,
            alarm,
        };
        let payload = sample
            .to_json()
            .ok_or_else(|| bad("a value that is not a number"))?;
        Ok(Some((key.topic.clone(), key.device.clone(), payload)))
    }
}

fn quality_code(q: Quality) -> i64 {
    match q {
        Quality::Good => 0,
        Quality::OutOfRange => 1,
        Quality::Stale => 2,
        Quality::ClockUnsynced => 3,
    }
}

fn flags(q: Quality, a: Option<Alarm>) -> i64 {
    quality_code(q) | i64::from(Alarm::code(a)) << 2
}

fn unflags(f: i64) -> Option<(Quality, Option<Alarm>)> {
    let q = match f & 3 {
        0 => Quality::Good,
        1 => Quality::OutOfRange,
        2 => Quality::Stale,
        _ => Quality::ClockUnsynced,
    };
    let a = u8::try_from(f >> 2).ok().and_then(Alarm::from_code)?;
    Some((q, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip() {
        for q in [
            Quality::Good,
            Quality::OutOfRange,
            Quality::Stale,
            Quality::ClockUnsynced,
        ] {
            for a in [
                None,
                Some(Alarm::Clear),
                Some(Alarm::Low),
                Some(Alarm::High),
            ] {
                assert_eq!(unflags(flags(q, a)), Some((q, a)));
            }
        }
        assert_eq!(unflags(4 * 9), None);
    }
}

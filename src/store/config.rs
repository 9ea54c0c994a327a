//! The `buffer:` section: where the outbox lives, how often it commits, and its caps.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::decode::MapReader;
use crate::config::units::{ms, secs};

#[derive(Debug, Clone, PartialEq)]
pub struct BufferConfig {
    /// Relative paths are relative to the working directory.
    pub dir: PathBuf,
    pub commit_interval: Duration,
    /// How often the local bus writes the retained copies of the gateway's own readings that
    /// changed (and at a clean stop); zero writes them with every commit.
    pub retained_flush: Duration,
    /// Caps: past any of them the oldest telemetry is dropped (and counted); alarms never are.
    pub max_bytes: u64,
    pub max_rows: u64,
    pub max_age: Option<Duration>,
}

/// Enough for days of a busy site, small beside any SD card the gateway runs from.
const DEFAULT_BUFFER_MAX_BYTES: u64 = 512 * 1024 * 1024;
const DEFAULT_BUFFER_MAX_ROWS: u64 = 5_000_000;

pub fn decode_buffer(m: &mut MapReader) -> Option<BufferConfig> {
    let dir = match m.node("dir") {
        None => Some("data".to_string()),
        Some(_) => m.string("dir"),
    };
    if dir.as_deref() == Some("") {
        m.error("dir", "must not be empty");
    }
    let commit_interval = m
        .duration("commit_interval", ms(1)..=secs(10))
        .unwrap_or(ms(200));
    let retained_flush = m
        .duration("retained_flush", Duration::ZERO..=secs(3600))
        .unwrap_or(secs(60));
    let max_bytes = m
        .size("max_bytes", 64 * 1024..=1024 * 1024 * 1024 * 1024)
        .unwrap_or(DEFAULT_BUFFER_MAX_BYTES);
    let max_rows = m
        .int("max_rows", 100..=1_000_000_000u64)
        .unwrap_or(DEFAULT_BUFFER_MAX_ROWS);
    let max_age = m.duration("max_age", secs(60)..=secs(3650 * 86_400));
    Some(BufferConfig {
        dir: PathBuf::from(dir.filter(|d| !d.is_empty())?),
        commit_interval,
        retained_flush,
        max_bytes,
        max_rows,
        max_age,
    })
}

//! DS18B20 temperature probes on 1-Wire, read through the kernel's w1 sysfs interface
//! (`<root>/28-xxxxxxxxxxxx/w1_slave`). Reading that file makes the kernel run a conversion
//! (~750 ms), so it is done on the blocking pool.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::decode::MapReader;
use crate::reading::{Quality, Reading};

pub const DEFAULT_ROOT: &str = "/sys/bus/w1/devices";
/// The scratchpad's power-on value: read before any conversion ran, not a temperature.
const POWER_ON_MILLI: i64 = 85_000;
/// What the kernel reports when the probe did not answer the conversion.
const NO_PROBE_MILLI: i64 = -127_000;
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub struct OneWireConfig {
    /// The probe's id, as its sysfs directory is named: `28-` and 12 hex digits.
    pub id: String,
    pub root: PathBuf,
    pub interval: Duration,
}

impl OneWireConfig {
    pub fn quantities(&self) -> Vec<(&'static str, &'static str)> {
        vec![("temperature", "degC")]
    }

    pub fn path(&self) -> PathBuf {
        self.root.join(&self.id).join("w1_slave")
    }
}

/// Decodes a device's `onewire:` section.
///
/// ```yaml
/// onewire:
///   id: 28-0316a2795aff
///   root: /sys/bus/w1/devices   # default
///   interval: 10s
/// ```
pub(crate) fn decode(m: &mut MapReader) -> Option<OneWireConfig> {
    m.require(&["id"]);
    let id = m.string("id").and_then(|id| {
        let ok = id.len() == 15
            && id.starts_with("28-")
            && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Some(id)
        } else {
            m.error(
                "id",
                format!("`{id}` is not a DS18B20 id: expected `28-` and 12 hex digits, as listed in /sys/bus/w1/devices"),
            );
            None
        }
    });
    let root = match m.node("root") {
        None => Some(DEFAULT_ROOT.to_string()),
        Some(_) => m.string("root"),
    };
    // One conversion at 12 bits takes 750 ms.
    let interval = m
        .duration(
            "interval",
            Duration::from_secs(1)..=Duration::from_secs(86_400),
        )
        .unwrap_or(Duration::from_secs(10));
    Some(OneWireConfig {
        id: id?,
        root: PathBuf::from(root.filter(|r| !r.is_empty())?),
        interval,
    })
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{0} not found: the probe is not connected, or 1-Wire is not enabled (dtoverlay=w1-gpio in config.txt; 4.7 kOhm pull-up on the data line)")]
    Missing(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: CRC check failed (`NO`): noise or a long cable; the reading is discarded")]
    Crc { path: String },
    #[error("{path}: 85.000 degC is the power-on value, not a measurement: the probe reset (weak power or parasite mode)")]
    PowerOn { path: String },
    #[error("{path}: -127 degC: the probe did not answer the conversion")]
    NoAnswer { path: String },
    #[error("{path}: unexpected content {content:?}")]
    Format { path: String, content: String },
}

/// Parses the two lines of `w1_slave` into degC. `path` is for the error text.
pub fn parse_w1_slave(text: &str, path: &str) -> Result<f64, Error> {
    let format = || Error::Format {
        path: path.to_string(),
        content: text.chars().take(120).collect(),
    };
    let mut lines = text.lines();
    let (crc_line, data_line) = (
        lines.next().ok_or_else(format)?,
        lines.next().ok_or_else(format)?,
    );
    match crc_line.trim_end().rsplit(' ').next() {
        Some("YES") => {}
        Some("NO") => {
            return Err(Error::Crc {
                path: path.to_string(),
            })
        }
        _ => return Err(format()),
    }
    let milli: i64 = data_line
        .rsplit_once("t=")
        .and_then(|(_, t)| t.trim().parse().ok())
        .ok_or_else(format)?;
    match milli {
        POWER_ON_MILLI => Err(Error::PowerOn {
            path: path.to_string(),
        }),
        m if m <= NO_PROBE_MILLI => Err(Error::NoAnswer {
            path: path.to_string(),
        }),
        m => Ok(m as f64 / 1000.0),
    }
}

/// Reads one probe once (blocking).
pub fn read_probe(cfg: &OneWireConfig) -> Result<f64, Error> {
    let path = cfg.path();
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_w1_slave(&text, &shown),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::Missing(missing_what(cfg, &path)))
        }
        Err(e) => Err(Error::Io {
            path: shown,
            message: e.to_string(),
        }),
    }
}

fn missing_what(cfg: &OneWireConfig, path: &Path) -> String {
    if cfg.root.is_dir() {
        format!("DS18B20 {} ({})", cfg.id, path.display())
    } else {
        format!("1-Wire bus directory {}", cfg.root.display())
    }
}

/// Reads the probe every `interval` until `shutdown`; a failing probe is retried with backoff
/// (and, silent, goes stale) while the other devices go on.
pub async fn run(
    device: String,
    cfg: OneWireConfig,
    tx: mpsc::Sender<Reading>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let c = cfg.clone();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::task::spawn_blocking(move || read_probe(&c)) => r,
        };
        let wait = match result {
            Ok(Ok(t)) => {
                if failures > 0 {
                    tracing::info!(device = %device, "reading again after {failures} failed attempts");
                }
                failures = 0;
                let r = Reading {
                    device: device.clone(),
                    quantity: "temperature".into(),
                    value: t,
                    unit: Some("degC"),
                    ts: SystemTime::now(),
                    quality: Quality::Good,
                };
                if tx.send(r).await.is_err() {
                    return;
                }
                cfg.interval
            }
            Ok(Err(e)) => {
                failures += 1;
                let retry =
                    super::poll::backoff(cfg.interval, failures, MAX_BACKOFF.max(cfg.interval));
                if failures == 1 {
                    tracing::warn!(device = %device, "{e}; retrying, next in {retry:?}");
                } else {
                    tracing::debug!(device = %device, "{e}; attempt {failures}, next in {retry:?}");
                }
                retry
            }
            Err(e) => {
                tracing::error!(device = %device, "1-Wire read task failed: {e}");
                cfg.interval
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

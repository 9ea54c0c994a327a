//! Serial sensors: ASCII lines and binary frames on a UART ([`SerialConfig`], one device per
//! port) and Modbus RTU slaves on an RS-485 line ([`modbus`], many devices per port).
//!
//! Protocol code is generic over `AsyncRead + AsyncWrite`, so tests drive it over pty pairs
//! (and under qemu-user, where a port cannot be opened by path); [`run`] only adds opening by
//! path, with backoff, and reopening after an unplug.

pub mod checksum;
mod config;
pub mod frame;
pub mod line;
pub mod modbus;
pub mod port;

pub(crate) use config::decode;
pub use config::{Protocol, SerialConfig};
pub use port::PortSettings;

use std::collections::HashSet;
use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reading::{Quality, Reading};

/// One value a protocol decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub quantity: &'static str,
    pub value: f64,
    pub unit: Option<&'static str>,
    pub quality: Quality,
}

impl Sample {
    pub fn good(quantity: &'static str, value: f64, unit: Option<&'static str>) -> Sample {
        Sample {
            quantity,
            value,
            unit,
            quality: Quality::Good,
        }
    }

    pub fn reading(&self, device: &str, ts: SystemTime) -> Reading {
        Reading {
            device: device.to_string(),
            quantity: self.quantity.to_string(),
            value: self.value,
            unit: self.unit,
            ts,
            quality: self.quality,
        }
    }
}

/// Quantity and unit names from the config live as long as the process (readings and
/// `AdapterConfig::quantities` speak `&'static str`); each distinct name is leaked once, so
/// reloads do not grow memory.
pub(crate) fn intern(s: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let Ok(mut names) = NAMES.get_or_init(Default::default).lock() else {
        return Box::leak(s.to_string().into_boxed_str());
    };
    if let Some(n) = names.get(s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_string().into_boxed_str());
    names.insert(n);
    n
}

/// Logs the first error of a burst loudly and the rest at debug level, and says when good
/// data comes back. A sensor with steady noise between good frames would start a burst at every
/// frame: a new burst is logged loudly only a minute after the last loud one.
pub(crate) struct Burst {
    errors: u64,
    loud: bool,
    last_loud: Option<Instant>,
}

const QUIET_AFTER_LOUD: Duration = Duration::from_secs(60);

impl Burst {
    pub fn new() -> Burst {
        Burst {
            errors: 0,
            loud: false,
            last_loud: None,
        }
    }

    pub fn error(&mut self, what: impl std::fmt::Display) {
        self.errors += 1;
        let now = Instant::now();
        if self.errors == 1 && self.last_loud.is_none_or(|t| now - t >= QUIET_AFTER_LOUD) {
            self.loud = true;
            self.last_loud = Some(now);
            tracing::warn!(
                "{what}; more errors like it are logged at debug level until good data comes back"
            );
        } else {
            tracing::debug!("{what} (error {} of this burst)", self.errors);
        }
    }

    pub fn ok(&mut self, what: impl std::fmt::Display) {
        if self.errors > 0 {
            if std::mem::take(&mut self.loud) {
                tracing::info!("{what}: good data again after {} errors", self.errors);
            } else {
                tracing::debug!("{what}: good data again after {} errors", self.errors);
            }
            self.errors = 0;
        }
    }
}

/// Retries of a port that cannot be opened: 1 s doubling to this.
const MAX_OPEN_BACKOFF: Duration = Duration::from_secs(30);

/// Sleeps `d`; true when it is time to stop instead.
pub(crate) async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Reads one line or frame device from `stream` until `shutdown` (Ok) or until the stream
/// fails or ends (Err: the port is gone). Bad lines and frames are logged and skipped.
pub async fn serve<S: AsyncRead + Unpin>(
    id: &str,
    cfg: &SerialConfig,
    stream: S,
    tx: &mpsc::Sender<Reading>,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    serve_with(id, cfg, stream, tx, shutdown, &mut Burst::new()).await
}

/// [`serve`] with the device's error log state, which outlives a reopened port.
async fn serve_with<S: AsyncRead + Unpin>(
    id: &str,
    cfg: &SerialConfig,
    mut stream: S,
    tx: &mpsc::Sender<Reading>,
    shutdown: &CancellationToken,
    burst: &mut Burst,
) -> io::Result<()> {
    let mut decoder = Decoder::new(cfg);
    let mut thin = Thinner::new(cfg.interval);
    let origin = format!("serial port {} (device {id})", cfg.port.path);
    let mut buf = vec![0u8; 1024];
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = stream.read(&mut buf) => r?,
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "port closed"));
        }
        let mut out = Vec::new();
        decoder.push(&buf[..n], |r| match r {
            Ok(samples) => {
                if !samples.is_empty() {
                    burst.ok(&origin);
                }
                out.extend(samples);
            }
            Err(e) => {
                crate::health::metrics::device_error(id, "bad_data");
                burst.error(format_args!("{origin}: {e}"));
            }
        });
        let now = Instant::now();
        let ts = SystemTime::now();
        for s in out.into_iter().filter(|s| thin.pass(s.quantity, now)) {
            if tx.send(s.reading(id, ts)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// A line or frame protocol, fed with bytes as they come.
pub struct Decoder {
    kind: DecoderKind,
}

enum DecoderKind {
    Line(line::LineSplitter, line::LineSpec),
    Frame(frame::FrameDecoder),
    A02yyuw(frame::FrameDecoder, Option<frame::TankGeometry>),
}

impl Decoder {
    pub fn new(cfg: &SerialConfig) -> Decoder {
        let kind = match &cfg.protocol {
            Protocol::Line(spec) => {
                DecoderKind::Line(line::LineSplitter::new(spec.max_line), spec.clone())
            }
            Protocol::Frame(spec) => DecoderKind::Frame(frame::FrameDecoder::new(spec.clone())),
            Protocol::A02yyuw(tank) => {
                DecoderKind::A02yyuw(frame::FrameDecoder::new(frame::a02yyuw()), *tank)
            }
        };
        Decoder { kind }
    }

    /// Feeds `bytes`; `on_item` gets the values of each complete line or frame, or what was
    /// wrong with it.
    pub fn push(&mut self, bytes: &[u8], mut on_item: impl FnMut(Result<Vec<Sample>, String>)) {
        match &mut self.kind {
            DecoderKind::Line(split, spec) => split.push(bytes, |l| {
                on_item(match l {
                    Ok(l) => spec.parse(l).map_err(|e| {
                        let shown: String = l.chars().take(60).collect();
                        format!("{e}: {shown:?}")
                    }),
                    Err(e) => Err(e.to_string()),
                })
            }),
            DecoderKind::Frame(dec) => {
                dec.push(bytes);
                while let Some(r) = dec.next_frame() {
                    on_item(r.map(|f| dec.spec().values(&f)).map_err(|e| e.to_string()));
                }
            }
            DecoderKind::A02yyuw(dec, tank) => {
                dec.push(bytes);
                while let Some(r) = dec.next_frame() {
                    on_item(
                        r.map(|f| {
                            let mm = f64::from(u16::from_be_bytes([f[1], f[2]]));
                            frame::a02yyuw_values(mm, tank.as_ref())
                        })
                        .map_err(|e| e.to_string()),
                    );
                }
            }
        }
    }
}

/// Passes at most one value per quantity per interval: sensors that stream (an ultrasonic
/// sensor sends ten frames a second) are thinned to the configured rate.
pub struct Thinner {
    interval: Duration,
    last: Vec<(&'static str, Instant)>,
}

impl Thinner {
    pub fn new(interval: Duration) -> Thinner {
        Thinner {
            interval,
            last: Vec::new(),
        }
    }

    pub fn pass(&mut self, quantity: &'static str, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        match self.last.iter_mut().find(|(q, _)| *q == quantity) {
            Some((_, t)) if now.duration_since(*t) < self.interval => false,
            Some((_, t)) => {
                *t = now;
                true
            }
            None => {
                self.last.push((quantity, now));
                true
            }
        }
    }
}

/// Opens the device's port by path, reads it until shutdown, and reopens it with backoff when
/// it fails or goes away (a USB adapter unplugged).
pub async fn run(
    id: String,
    cfg: SerialConfig,
    tx: mpsc::Sender<Reading>,
    shutdown: CancellationToken,
) {
    let mut opener = Opener::new(&cfg.port, &id);
    let mut burst = Burst::new();
    while let Some(stream) = opener.open(&shutdown).await {
        match serve_with(&id, &cfg, stream, &tx, &shutdown, &mut burst).await {
            Ok(()) => return,
            Err(e) => opener.lost(&e),
        }
    }
}

/// Opens a port by path, retrying with backoff, and reports when it is lost and found again.
pub(crate) struct Opener<'a> {
    port: &'a PortSettings,
    devices: String,
    failures: u32,
    lost: bool,
}

impl<'a> Opener<'a> {
    pub fn new(port: &'a PortSettings, devices: &str) -> Opener<'a> {
        Opener {
            port,
            devices: devices.to_string(),
            failures: 0,
            lost: false,
        }
    }

    /// The open port, or `None` once `shutdown` is cancelled.
    pub async fn open(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Option<tokio_serial::SerialStream> {
        let (port, devices) = (self.port, &self.devices);
        if self.lost {
            // Give a vanishing USB adapter time to go, rather than reopening it half-gone.
            if sleep_or_stop(Duration::from_millis(200), shutdown).await {
                return None;
            }
        }
        while !shutdown.is_cancelled() {
            match port.open() {
                Ok(stream) => {
                    if self.failures > 0 || self.lost {
                        tracing::info!(
                            "serial port {} (device {devices}) open again after {} failed attempts",
                            port.path,
                            self.failures
                        );
                    }
                    self.failures = 0;
                    self.lost = false;
                    tracing::debug!("serial port {} open for {devices}", port.describe());
                    return Some(stream);
                }
                Err(e) => {
                    self.failures += 1;
                    let retry = crate::adapters::poll::backoff(
                        Duration::from_secs(1),
                        self.failures,
                        MAX_OPEN_BACKOFF,
                    );
                    let msg = port.open_error(&e);
                    if self.failures == 1 {
                        tracing::error!(
                            "{msg} (device {devices}); retrying, readings stale meanwhile"
                        );
                    } else {
                        tracing::debug!("{msg} (device {devices}); retry in {retry:?}");
                    }
                    if sleep_or_stop(retry, shutdown).await {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// The open port failed (read error, end of file): logged; the next `open` reopens it.
    pub fn lost(&mut self, e: &io::Error) {
        tracing::error!(
            "serial port {} (device {}): {e}; unplugged? reopening",
            self.port.path,
            self.devices
        );
        self.lost = true;
    }
}

//! Modbus RTU master: several slaves on one RS-485 line, one task per port.
//!
//! [`Master`] does one request at a time over any `AsyncRead + AsyncWrite`: it keeps the 3.5
//! character silence before each request, drops stray bytes, and gives up after the request's
//! timeout. Our own small master rather than tokio-modbus's RTU client: that client drops a
//! reply whose CRC fails and goes on waiting for another, so a garbling slave would cost its
//! full timeout and its CRC errors could not be counted apart from silence.
//!
//! [`Poller`] is the schedule: which slave is due, retries, per-device counters, backoff for a
//! slave that keeps failing. A failing slave only ever costs its own timeouts; the others are
//! polled on their own cadence, and the silence of the failing one marks it stale downstream.

pub mod map;
pub mod rtu;

pub use map::{ModbusConfig, Point, RegType};
pub use rtu::{Request, RtuError, Table};

use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{sleep_or_stop, Opener, PortSettings, Sample};
use crate::adapters::poll::{self, Schedule};
use crate::reading::Reading;

/// Longest wait between polls of a failing slave (or its interval, if longer).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One request at a time on a serial line.
pub struct Master<S> {
    io: S,
    port: PortSettings,
    /// End of the last traffic: the next request waits the inter-frame gap from here.
    quiet_since: Instant,
    buf: Vec<u8>,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "port closed")
}

impl<S: AsyncRead + AsyncWrite + Unpin> Master<S> {
    pub fn new(io: S, port: &PortSettings) -> Master<S> {
        Master {
            io,
            port: port.clone(),
            quiet_since: Instant::now(),
            buf: Vec::with_capacity(256),
        }
    }

    /// Sends `req` and waits for its response: the wire time of both frames plus `timeout`.
    /// The outer error is the port failing (reopen it); the inner one is the slave's.
    pub async fn read(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> io::Result<Result<Vec<u16>, RtuError>> {
        // The timer rounds up to the next millisecond: the gap is kept, never shortened.
        let quiet_at = self.quiet_since + self.port.frame_gap();
        if Instant::now() < quiet_at {
            tokio::time::sleep_until(quiet_at).await;
        }
        // A late reply to an earlier request, or noise, must not be taken for this response.
        // Polled once, without a timer: a zero timeout would cost a timer tick (1 ms).
        let mut chunk = [0u8; 256];
        loop {
            let mut rb = ReadBuf::new(&mut chunk);
            let ready = std::future::poll_fn(|cx| {
                Poll::Ready(match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                })
            })
            .await;
            match ready {
                None => break,
                Some(Ok(())) if rb.filled().is_empty() => return Err(closed()),
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
            }
        }
        let frame = req.encode();
        self.io.write_all(&frame).await?;
        self.io.flush().await?;
        let deadline =
            Instant::now() + self.port.wire_time(frame.len() + req.response_len()) + timeout;
        self.buf.clear();
        let result = loop {
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) if self.buf.is_empty() => break Err(RtuError::Timeout),
                Err(_) => break Err(RtuError::Incomplete(self.buf.len())),
                Ok(Ok(0)) => return Err(closed()),
                Ok(Ok(n)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(r) = rtu::check_response(req, &self.buf) {
                        break r;
                    }
                }
                Ok(Err(e)) => return Err(e),
            }
        };
        self.quiet_since = Instant::now();
        Ok(result)
    }
}

/// What one device's requests met with since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub requests: u64,
    pub ok: u64,
    pub timeouts: u64,
    pub crc_errors: u64,
    pub exceptions: u64,
}

struct Slot {
    id: String,
    cfg: ModbusConfig,
    requests: Vec<Request>,
    schedule: Schedule,
    stats: DeviceStats,
}

/// What polling one device produced.
pub type Outcome = poll::Outcome<Sample>;

/// The likely cause of a slave's error, for the technician reading the log.
fn hint(e: &RtuError) -> &'static str {
    match e {
        RtuError::Timeout => "no answer: check the slave address, baud rate and parity, the A/B wiring, and that the device is powered",
        RtuError::Incomplete(_) => "the answer broke off: noise, or a timeout too short for this device",
        RtuError::Crc { .. } | RtuError::Garbled(_) => "corrupted answers: noise, missing termination or bias resistors, or two devices at one address",
        RtuError::Exception { .. } => "the device refused the request: check the register map",
    }
}

pub struct Poller {
    port: String,
    slots: Vec<Slot>,
}

impl Poller {
    /// Every device is due at `now`.
    pub fn new(port: &str, devices: Vec<(String, ModbusConfig)>, now: Instant) -> Poller {
        let slots = devices
            .into_iter()
            .map(|(id, cfg)| Slot {
                requests: cfg.requests(),
                id,
                schedule: Schedule::new(cfg.interval, MAX_BACKOFF, now),
                cfg,
                stats: DeviceStats::default(),
            })
            .collect();
        Poller {
            port: port.to_string(),
            slots,
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.slots.iter().map(|s| s.schedule.due()).min()
    }

    pub fn stats(&self, device: &str) -> Option<&DeviceStats> {
        self.slots.iter().find(|s| s.id == device).map(|s| &s.stats)
    }

    /// Polls every device that is due, in config order. Only a failing port is an error.
    pub async fn poll<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        master: &mut Master<S>,
    ) -> io::Result<Vec<Outcome>> {
        let now = Instant::now();
        let mut out = Vec::new();
        for s in self.slots.iter_mut().filter(|s| s.schedule.due() <= now) {
            let mut answers = Vec::with_capacity(s.requests.len());
            let mut failed = None;
            for req in &s.requests {
                let mut attempt = 0;
                loop {
                    s.stats.requests += 1;
                    match master.read(req, s.cfg.timeout).await? {
                        Ok(words) => {
                            s.stats.ok += 1;
                            answers.push((*req, words));
                            break;
                        }
                        Err(e) => {
                            match e.kind() {
                                "timeout" => s.stats.timeouts += 1,
                                "crc" => s.stats.crc_errors += 1,
                                _ => s.stats.exceptions += 1,
                            }
                            crate::health::metrics::device_error(&s.id, e.kind());
                            // An exception is the device's considered answer: asking again
                            // gets the same one.
                            let retry = !matches!(e, RtuError::Exception { .. });
                            if !retry || attempt >= s.cfg.retries {
                                failed = Some((*req, e));
                                break;
                            }
                            attempt += 1;
                        }
                    }
                }
                if failed.is_some() {
                    break;
                }
            }
            let done = Instant::now();
            match failed {
                None => {
                    out.push(Outcome::Values {
                        device: s.id.clone(),
                        values: s.cfg.samples(&answers),
                        recovered_after: s.schedule.answered(done),
                    });
                }
                Some((req, e)) => {
                    let (failures, retry_in) = s.schedule.failed(done);
                    out.push(Outcome::Failed {
                        device: s.id.clone(),
                        message: format!(
                            "{} slave {} (device {}): {:?} registers {}..{}: {e}; {}",
                            self.port,
                            s.cfg.slave,
                            s.id,
                            req.table,
                            req.address,
                            u32::from(req.address) + u32::from(req.count) - 1,
                            hint(&e)
                        ),
                        failures,
                        retry_in,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Polls the devices of one port over `stream` until `shutdown` (Ok) or until the port fails
/// (Err: reopen it).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    poller: &mut Poller,
    stream: S,
    port: &PortSettings,
    tx: &mpsc::Sender<Reading>,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let mut master = Master::new(stream, port);
    loop {
        let wait = poller.next_due().map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if sleep_or_stop(wait, shutdown).await {
            return Ok(());
        }
        let outcomes = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = poller.poll(&mut master) => r?,
        };
        for o in outcomes {
            match o {
                Outcome::Values {
                    device,
                    values: samples,
                    recovered_after,
                } => {
                    if recovered_after > 0 {
                        tracing::info!(device = %device, "{}: answering again after {recovered_after} failed polls", port.path);
                    }
                    let ts = SystemTime::now();
                    for s in samples {
                        if tx.send(s.reading(&device, ts)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Outcome::Failed {
                    message,
                    failures,
                    retry_in,
                    ..
                } => poll::log_failure(&message, failures, retry_in),
            }
        }
    }
}

/// The Modbus devices of a site grouped by port, each group in config order: one task each.
/// (The config has checked that devices on one port share its line settings.)
pub fn by_port(
    devices: &[crate::adapters::DeviceConfig],
) -> Vec<(PortSettings, Vec<(String, ModbusConfig)>)> {
    let mut ports: Vec<(PortSettings, Vec<(String, ModbusConfig)>)> = Vec::new();
    for d in devices {
        let crate::adapters::AdapterConfig::Modbus(c) = &d.adapter else {
            continue;
        };
        match ports.iter_mut().find(|(p, _)| p.path == c.port.path) {
            Some((_, list)) => list.push((d.id.clone(), c.clone())),
            None => ports.push((c.port.clone(), vec![(d.id.clone(), c.clone())])),
        }
    }
    ports
}

/// Opens the port by path and polls its devices until shutdown, reopening it after a failure.
pub async fn run_port(
    port: PortSettings,
    devices: Vec<(String, ModbusConfig)>,
    tx: mpsc::Sender<Reading>,
    shutdown: CancellationToken,
) {
    let ids: Vec<&str> = devices.iter().map(|(id, _)| id.as_str()).collect();
    let ids = ids.join(", ");
    let mut poller = Poller::new(&port.path, devices, Instant::now());
    let mut opener = Opener::new(&port, &ids);
    while let Some(stream) = opener.open(&shutdown).await {
        match serve(&mut poller, stream, &port, &tx, &shutdown).await {
            Ok(()) => return,
            Err(e) => opener.lost(&e),
        }
    }
}

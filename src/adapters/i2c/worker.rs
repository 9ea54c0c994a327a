//! One blocking thread per bus serves every device on it in turn, so slow conversions never
//! block the async runtime. [`BusWorker`] is the schedule (which device is due, backoff after a
//! failure) without sleeping; [`spawn`] is the thin loop around it that opens the bus, sleeps
//! and hands readings to the pipeline.

use std::io;
use std::time::{Duration, SystemTime};

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Chip, I2cConfig, ThreadDelay, Value};
use crate::adapters::poll::{self, backoff, Schedule};
use crate::reading::Reading;

/// Longest wait between retries of a failing device (or longer, for a device read less often).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Retries of a bus that cannot be opened: 1 s doubling to this.
const MAX_OPEN_BACKOFF: Duration = Duration::from_secs(60);

struct Slot {
    id: String,
    cfg: I2cConfig,
    chip: Chip,
    ready: bool,
    schedule: Schedule,
}

/// What serving one device produced.
pub type Outcome = poll::Outcome<Value>;

pub struct BusWorker {
    bus: String,
    slots: Vec<Slot>,
}

impl BusWorker {
    /// Every device is due at `now`.
    pub fn new(bus: &str, devices: Vec<(String, I2cConfig)>, now: Instant) -> BusWorker {
        let slots = devices
            .into_iter()
            .map(|(id, cfg)| Slot {
                chip: Chip::new(&cfg),
                id,
                schedule: Schedule::new(cfg.interval, MAX_BACKOFF, now),
                cfg,
                ready: false,
            })
            .collect();
        BusWorker {
            bus: bus.to_string(),
            slots,
        }
    }

    /// When the next device is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots.iter().map(|s| s.schedule.due()).min()
    }

    /// Serves every device due at `now`, in config order; a failing device is retried later
    /// (and set up again first) while the others go on.
    pub fn poll<I: I2c, D: DelayNs>(
        &mut self,
        i2c: &mut I,
        delay: &mut D,
        now: Instant,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        for s in self.slots.iter_mut().filter(|s| s.schedule.due() <= now) {
            let result = if s.ready {
                s.chip.measure(i2c, delay)
            } else {
                s.chip
                    .init(i2c, delay)
                    .and_then(|()| s.chip.measure(i2c, delay))
            };
            match result {
                Ok(values) => {
                    s.ready = true;
                    out.push(Outcome::Values {
                        device: s.id.clone(),
                        values,
                        recovered_after: s.schedule.answered(now),
                    });
                }
                Err(e) => {
                    s.ready = false;
                    let (failures, retry_in) = s.schedule.failed(now);
                    out.push(Outcome::Failed {
                        device: s.id.clone(),
                        message: format!(
                            "{} 0x{:02X} ({}, device {}): {e}; {}",
                            self.bus,
                            s.cfg.address,
                            s.cfg.model.model().name(),
                            s.id,
                            e.hint()
                        ),
                        failures,
                        retry_in,
                    });
                }
            }
        }
        out
    }
}

/// Why a bus could not be opened, with what to do about it.
pub fn open_error(bus: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!(
            "I2C bus {bus} does not exist: enable I2C (raspi-config > Interface Options > I2C, or dtparam=i2c_arm=on in config.txt) and reboot, or check the bus number (ls /dev/i2c-*)"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "I2C bus {bus}: permission denied: add the service user to the `i2c` group"
        ),
        _ => format!("I2C bus {bus}: cannot open: {e}"),
    }
}

/// Opens a Linux I2C bus device.
pub fn open_linux(bus: &str) -> io::Result<linux_embedded_hal::I2cdev> {
    use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
    linux_embedded_hal::I2cdev::new(bus).map_err(|e| match e {
        LinuxI2CError::Errno(n) => io::Error::from_raw_os_error(n),
        LinuxI2CError::Io(e) => e,
    })
}

fn reading(device: &str, v: Value, ts: SystemTime) -> Reading {
    Reading {
        device: device.to_string(),
        quantity: v.quantity.to_string(),
        value: v.value,
        unit: Some(v.unit),
        ts,
        quality: v.quality,
    }
}

/// Starts the worker thread of one bus. `open` is called until it succeeds, with backoff; the
/// devices' readings go to `tx` until `shutdown`.
pub fn spawn<I, F>(
    bus: String,
    devices: Vec<(String, I2cConfig)>,
    mut open: F,
    tx: mpsc::Sender<Reading>,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    I: I2c + Send + 'static,
    F: FnMut() -> io::Result<I> + Send + 'static,
{
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // Sleeps `d`; true when it is time to stop instead.
        let sleep = |d: Duration| {
            rt.block_on(async {
                tokio::select! {
                    _ = shutdown.cancelled() => true,
                    _ = tokio::time::sleep(d) => false,
                }
            })
        };
        let ids: Vec<String> = devices.iter().map(|(id, _)| id.clone()).collect();
        let mut worker = BusWorker::new(&bus, devices, Instant::now());
        let mut i2c = None;
        let mut open_failures = 0u32;
        tracing::debug!(bus = %bus, "I2C worker for {}", ids.join(", "));
        while !shutdown.is_cancelled() {
            let dev = match &mut i2c {
                Some(dev) => dev,
                None => match open() {
                    Ok(dev) => {
                        if open_failures > 0 {
                            tracing::info!(
                                "I2C bus {bus} opened after {open_failures} failed attempts"
                            );
                        }
                        i2c.insert(dev)
                    }
                    Err(e) => {
                        open_failures += 1;
                        let retry =
                            backoff(Duration::from_secs(1), open_failures, MAX_OPEN_BACKOFF);
                        let msg = open_error(&bus, &e);
                        if open_failures == 1 {
                            tracing::error!(
                                "{msg}; devices {} marked stale, retrying",
                                ids.join(", ")
                            );
                        } else {
                            tracing::debug!("{msg}; retry in {retry:?}");
                        }
                        if sleep(retry) {
                            break;
                        }
                        continue;
                    }
                },
            };
            for o in worker.poll(dev, &mut ThreadDelay, Instant::now()) {
                match o {
                    Outcome::Values {
                        device,
                        values,
                        recovered_after,
                    } => {
                        if recovered_after > 0 {
                            tracing::info!(device = %device, "reading again after {recovered_after} failed attempts");
                        }
                        let ts = SystemTime::now();
                        for v in values {
                            if tx.blocking_send(reading(&device, v, ts)).is_err() {
                                return;
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
            let wait = worker.next_due().map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
            });
            if sleep(wait) {
                break;
            }
        }
    })
}

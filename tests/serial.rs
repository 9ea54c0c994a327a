//! Serial sensors over pty pairs: the gateway's side of each pair is what it would open as
//! `/dev/ttyUSB0`, the test plays the sensor (or the Modbus slaves) on the other side.

#[path = "support/mod.rs"]
mod support;

#[path = "serial/lines.rs"]
mod lines;

#[path = "serial/frames.rs"]
mod frames;

#[path = "serial/modbus.rs"]
mod modbus;

#[path = "serial/ports.rs"]
mod ports;

use std::time::Duration;

use edgegate::adapters::serial::{self, SerialConfig};
use edgegate::adapters::AdapterConfig;
use edgegate::reading::Reading;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

/// A connected pty pair: (the sensor's end, the gateway's end). Close-on-exec, so a gateway
/// process started later does not inherit the sensor's end and keep the pty alive.
pub fn pty() -> (SerialStream, SerialStream) {
    use std::os::fd::AsRawFd;
    let (a, b) = SerialStream::pair().expect("open a pty pair");
    for fd in [a.as_raw_fd(), b.as_raw_fd()] {
        // SAFETY: fcntl on a descriptor we own; no memory is passed.
        let r = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(r, 0, "FD_CLOEXEC: {}", std::io::Error::last_os_error());
    }
    (a, b)
}

/// The adapter section of the only device of a one-device site whose device section is `yaml`
/// (indented under `devices.dev`).
pub fn device(yaml: &str) -> AdapterConfig {
    let mut text = String::from("site: s\ngateway: g\ndevices:\n  dev:\n");
    for line in yaml.lines() {
        text += &format!("    {line}\n");
    }
    let cfg =
        edgegate::site::load_str(&text, "site.yaml").unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    cfg.devices[0].adapter.clone()
}

pub fn serial_config(yaml: &str) -> SerialConfig {
    match device(yaml) {
        AdapterConfig::Serial(c) => c,
        other => panic!("not a serial device: {other:?}"),
    }
}

/// Runs the line/frame reader of `cfg` on a pty, writes `chunks` from the sensor's side one
/// by one, and returns the readings: once `expect` have come, whatever else comes within
/// 200 ms (so an extra one is seen too).
pub async fn through_pty(cfg: &SerialConfig, chunks: &[&[u8]], expect: usize) -> Vec<Reading> {
    let (mut sensor, gateway) = pty();
    let (tx, mut rx) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let reader = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move { serial::serve("dev", &cfg, gateway, &tx, &stop).await })
    };
    for c in chunks {
        sensor.write_all(c).await.unwrap();
        sensor.flush().await.unwrap();
        // Separate writes arrive as separate reads, as they would from a slow sensor.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut got = Vec::new();
    let limit = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < expect {
        match tokio::time::timeout_at(limit, rx.recv()).await {
            Ok(Some(r)) => got.push(r),
            _ => panic!("expected {expect} readings, got {:?}", values(&got)),
        }
    }
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        got.push(r);
    }
    stop.cancel();
    reader.await.unwrap().unwrap();
    got
}

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), low byte first; computed here
/// independently of the gateway's.
pub fn crc16(data: &[u8]) -> [u8; 2] {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc.to_le_bytes()
}

/// (quantity, value) of each reading, in order.
pub fn values(readings: &[Reading]) -> Vec<(String, f64)> {
    readings
        .iter()
        .map(|r| (r.quantity.clone(), r.value))
        .collect()
}

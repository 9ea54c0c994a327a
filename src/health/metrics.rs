//! Prometheus text exposition (format 0.0.4) of the gateway's counters and gauges.
//!
//! Per-device counters live in a process-wide table so that any adapter can count its errors with
//! [`device_error`] without being handed a handle; everything else is read at scrape time from the
//! stage that owns it (outbox, bus, uplink).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

#[derive(Default, Clone)]
struct DeviceCounters {
    readings: u64,
    errors: BTreeMap<&'static str, u64>,
}

fn devices() -> &'static Mutex<BTreeMap<String, DeviceCounters>> {
    static DEVICES: OnceLock<Mutex<BTreeMap<String, DeviceCounters>>> = OnceLock::new();
    DEVICES.get_or_init(Default::default)
}

fn with_device(device: &str, f: impl FnOnce(&mut DeviceCounters)) {
    if let Ok(mut map) = devices().lock() {
        match map.get_mut(device) {
            Some(c) => f(c),
            None => f(map.entry(device.to_string()).or_default()),
        }
    }
}

/// One reading arrived from `device`.
pub fn reading(device: &str) {
    with_device(device, |c| c.readings += 1);
}

/// `device` failed in a way an integrator should see: `kind` is a short snake_case word such as
/// `timeout`, `crc`, `out_of_range`, `stale`.
pub fn device_error(device: &str, kind: &'static str) {
    with_device(device, |c| *c.errors.entry(kind).or_default() += 1);
}

/// Everything one scrape shows, gathered by the caller.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub uptime_s: f64,
    /// None when the outbox could not be read in time.
    pub outbox: Option<crate::store::Stats>,
    /// What the buffer wrote and was spared since start.
    pub writes: crate::store::WriteStats,
    /// `write_bytes` of the process, where the kernel tells.
    pub disk_bytes: Option<u64>,
    pub now_ms: i64,
    pub outbox_writable: bool,
    /// None for a local-only site.
    pub uplink: Option<UplinkSnapshot>,
    pub bus: crate::bus::BusStats,
    /// (stage, seconds since its last beat, allowed silence in seconds).
    pub stages: Vec<(String, f64, f64)>,
    pub healthy: bool,
}

#[derive(Debug, Default, Clone)]
pub struct UplinkSnapshot {
    pub connected: bool,
    pub reconnects: u64,
    /// Messages too large to send upstream, left in the buffer.
    pub oversize: u64,
    /// Seconds in the current state (connected or not).
    pub state_s: f64,
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// The whole exposition for `s` plus the per-device counters.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.one(
        "edgegate_up",
        "gauge",
        "1 when /healthz reports healthy, 0 when degraded.",
        b(s.healthy),
    );
    o.one(
        "edgegate_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        s.uptime_s,
    );

    let devices = devices().lock().map(|m| m.clone()).unwrap_or_default();
    o.family(
        "edgegate_readings_total",
        "counter",
        "Readings received from each device.",
    );
    for (d, c) in &devices {
        o.sample(
            "edgegate_readings_total",
            &[("device", d)],
            c.readings as f64,
        );
    }
    o.family(
        "edgegate_device_errors_total",
        "counter",
        "Device errors by kind (stale, out_of_range, and the adapters' own kinds).",
    );
    for (d, c) in &devices {
        for (kind, n) in &c.errors {
            o.sample(
                "edgegate_device_errors_total",
                &[("device", d), ("kind", kind)],
                *n as f64,
            );
        }
    }

    o.one(
        "edgegate_outbox_writable",
        "gauge",
        "1 while the buffer database can be written.",
        b(s.outbox_writable),
    );
    o.one(
        "edgegate_outbox_written_total",
        "counter",
        "Messages written to the buffer database since start.",
        s.writes.written as f64,
    );
    o.one(
        "edgegate_outbox_acked_before_write_total",
        "counter",
        "Messages acknowledged upstream before their commit since start: never written.",
        s.writes.elided as f64,
    );
    o.one(
        "edgegate_outbox_commits_total",
        "counter",
        "Buffer database transactions committed since start.",
        s.writes.commits as f64,
    );
    if let Some(n) = s.disk_bytes {
        o.one(
            "edgegate_disk_write_bytes_total",
            "counter",
            "Bytes the gateway process wrote to storage since start (/proc/self/io).",
            n as f64,
        );
    }
    if let Some(st) = &s.outbox {
        o.one(
            "edgegate_outbox_messages",
            "gauge",
            "Messages in the buffer waiting for the upstream broker's acknowledgement.",
            st.rows as f64,
        );
        o.one(
            "edgegate_outbox_bytes",
            "gauge",
            "Size of the waiting messages (topic and payload) in bytes.",
            st.bytes as f64,
        );
        let age = st
            .oldest_ms
            .map(|t| (s.now_ms - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        o.one(
            "edgegate_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest waiting message; 0 when the buffer is empty.",
            age,
        );
        o.family(
            "edgegate_outbox_dropped_total",
            "counter",
            "Messages the buffer caps dropped, by reason and device.",
        );
        for (reason, device, n) in &st.drops {
            o.sample(
                "edgegate_outbox_dropped_total",
                &[("reason", reason), ("device", device)],
                *n as f64,
            );
        }
    }

    if let Some(u) = &s.uplink {
        o.one(
            "edgegate_uplink_connected",
            "gauge",
            "1 while connected to the upstream broker.",
            b(u.connected),
        );
        o.one(
            "edgegate_uplink_state_seconds",
            "gauge",
            "Seconds since the uplink last connected or disconnected.",
            u.state_s,
        );
        o.one(
            "edgegate_uplink_reconnects_total",
            "counter",
            "Connections to the upstream broker after the first one.",
            u.reconnects as f64,
        );
        o.one(
            "edgegate_uplink_oversize_total",
            "counter",
            "Buffered messages too large for an upstream packet (1 MiB), left unsent.",
            u.oversize as f64,
        );
    }

    let bus = &s.bus;
    o.one(
        "edgegate_broker_clients",
        "gauge",
        "MQTT clients connected to the local broker.",
        bus.clients_connected as f64,
    );
    o.one(
        "edgegate_broker_messages_received_total",
        "counter",
        "Messages published into the local broker (by clients and by the gateway).",
        bus.messages_in as f64,
    );
    o.one(
        "edgegate_broker_messages_sent_total",
        "counter",
        "Messages the local broker delivered to clients and in-process subscribers.",
        bus.messages_out as f64,
    );
    o.one(
        "edgegate_broker_messages_dropped_total",
        "counter",
        "Messages the local broker dropped for full or offline client queues.",
        bus.dropped as f64,
    );
    o.one(
        "edgegate_broker_publishes_denied_total",
        "counter",
        "Publishes and wills the local broker's ACL refused.",
        bus.denied as f64,
    );

    o.family(
        "edgegate_stage_silence_seconds",
        "gauge",
        "Seconds since each pipeline stage last showed progress.",
    );
    for (stage, silent, _) in &s.stages {
        o.sample(
            "edgegate_stage_silence_seconds",
            &[("stage", stage)],
            *silent,
        );
    }
    o.family(
        "edgegate_stage_max_silence_seconds",
        "gauge",
        "Silence after which a stage counts as stalled and watchdog pings stop.",
    );
    for (stage, _, max) in &s.stages {
        o.sample(
            "edgegate_stage_max_silence_seconds",
            &[("stage", stage)],
            *max,
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_numbers_plain() {
        let mut o = Out(String::new());
        o.sample("m", &[("device", "a\"b\\c\nd")], 3.0);
        o.sample("m", &[], 0.25);
        assert_eq!(o.0, "m{device=\"a\\\"b\\\\c\\nd\"} 3\nm 0.25\n");
    }

    #[test]
    fn counters_per_device_are_rendered() {
        reading("metrics-test-dev");
        reading("metrics-test-dev");
        device_error("metrics-test-dev", "crc");
        let text = render(&Snapshot::default());
        assert!(text.contains("edgegate_readings_total{device=\"metrics-test-dev\"} 2\n"));
        assert!(text.contains(
            "edgegate_device_errors_total{device=\"metrics-test-dev\",kind=\"crc\"} 1\n"
        ));
        assert!(
            !text.contains("edgegate_uplink_connected"),
            "no uplink, no uplink metrics"
        );
    }
}

//! Modbus RTU against a slave simulator on the other end of a pty: three slaves on one line,
//! one dead and one answering with corrupt CRCs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgegate::adapters::serial::modbus::{self, Outcome, Poller};
use edgegate::adapters::AdapterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

use super::support::{emulated, free_port, wait_until, Subscriber};
use super::{crc16, device, pty};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slave {
    Good,
    Dead,
    CorruptCrc,
}

/// What the simulator saw: each request's arrival and the end of each reply it sent.
#[derive(Default)]
pub struct WireLog {
    pub requests: Vec<(Instant, Vec<u8>)>,
    pub replies: Vec<(Instant, Vec<u8>)>,
}

impl WireLog {
    /// Arrival times of requests to `slave` for `function` at `address`.
    pub fn asked(&self, slave: u8, function: u8, address: u16) -> Vec<Instant> {
        let a = address.to_be_bytes();
        self.requests
            .iter()
            .filter(|(_, r)| r[0] == slave && r[1] == function && r[2..4] == a)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// Register values of every simulated slave: holding 0 = 1234; input 0..1 = 21.5 as an f32,
/// low word first; holding 100 and up do not exist (exception 2).
fn answer(req: &[u8]) -> Vec<u8> {
    let (function, address, count) = (
        req[1],
        u16::from_be_bytes([req[2], req[3]]),
        u16::from_be_bytes([req[4], req[5]]),
    );
    let mut f = vec![req[0]];
    if address >= 100 {
        f.extend([function | 0x80, 0x02]);
    } else {
        let regs: Vec<u16> = (address..address + count)
            .map(|a| match (function, a) {
                (3, 0) => 1234,
                (4, 0) => 0x0000,
                (4, 1) => 0x41AC,
                _ => 0,
            })
            .collect();
        f.extend([function, (2 * count) as u8]);
        for r in regs {
            f.extend(r.to_be_bytes());
        }
    }
    let crc = crc16(&f);
    f.extend(crc);
    f
}

/// Plays the slaves on `port` until its task is aborted. Requests are 8 bytes with a valid CRC; anything
/// else is skipped a byte at a time, as a slave would resynchronise.
pub async fn simulate(
    mut port: SerialStream,
    slaves: BTreeMap<u8, Slave>,
    log: Arc<Mutex<WireLog>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = match port.read(&mut chunk).await {
            Ok(n) if n > 0 => n,
            // No one has the other end open (yet, or between an unplug and a reopen): a pty's
            // master reads EIO then. The simulator ends when its task is aborted.
            _ => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 8 {
            if crc16(&buf[..6]) != [buf[6], buf[7]] {
                buf.remove(0);
                continue;
            }
            let req: Vec<u8> = buf.drain(..8).collect();
            log.lock()
                .unwrap()
                .requests
                .push((Instant::now(), req.clone()));
            let mut reply = answer(&req);
            match slaves.get(&req[0]) {
                Some(Slave::Good) => {}
                Some(Slave::CorruptCrc) => {
                    let last = reply.len() - 1;
                    reply[last] ^= 0x5A;
                }
                Some(Slave::Dead) | None => continue,
            }
            if port.write_all(&reply).await.is_err() {
                return;
            }
            let _ = port.flush().await;
            log.lock().unwrap().replies.push((Instant::now(), reply));
        }
    }
}

fn modbus_device(slave: u8, extra: &str) -> String {
    format!(
        "modbus:\n  port: /dev/ttyRS485\n  baud: 115200\n  slave: {slave}\n  interval: 200ms\n  timeout: 100ms\n  retries: 1\n  registers:\n    level:\n      table: holding\n      address: 0\n      type: u16\n      scale: 0.01\n      unit: \"%\"\n    temperature:\n      table: input\n      address: 0\n      type: f32\n      word_order: little\n      unit: degC\n{extra}"
    )
}

fn indent(s: &str, by: usize) -> String {
    s.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// The device's error counters as `/metrics` shows them.
fn errors_in_metrics(device: &str) -> BTreeMap<String, u64> {
    let text = edgegate::health::metrics::render(&Default::default());
    let prefix = format!("edgegate_device_errors_total{{device=\"{device}\",kind=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (kind, n) = rest.split_once("\"} ")?;
            Some((kind.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_and_a_garbling_slave_do_not_slow_the_good_one() {
    let (sim_end, gateway_end) = pty();
    let log = Arc::new(Mutex::new(WireLog::default()));
    let slaves = BTreeMap::from([(1, Slave::Good), (2, Slave::Dead), (3, Slave::CorruptCrc)]);
    let sim = tokio::spawn(simulate(sim_end, slaves, log.clone()));

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut site = format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{port}\nbuffer:\n  dir: {}\ndevices:\n",
        dir.path().display()
    );
    let points = "points:\n  level:\n    decimals: 1\n    valid_max: 100\n";
    for (id, slave) in [("good", 1), ("dead", 2), ("garbled", 3)] {
        site += &format!("  {id}:\n{}", indent(&modbus_device(slave, points), 4));
    }
    let cfg = edgegate::site::load_str(&site, "site.yaml").unwrap();
    let stream = Mutex::new(Some(gateway_end));
    let stop = CancellationToken::new();
    let app = tokio::spawn(edgegate::app::run_with(
        cfg,
        stop.clone(),
        move |devices, tx, shutdown| {
            let mut tasks = Vec::new();
            for (port, list) in modbus::by_port(devices) {
                let Some(stream) = stream.lock().unwrap().take() else {
                    continue;
                };
                let (tx, shutdown) = (tx.clone(), shutdown.clone());
                tasks.push(tokio::spawn(async move {
                    let mut poller = Poller::new(&port.path, list, Instant::now());
                    let r = modbus::serve(&mut poller, stream, &port, &tx, &shutdown).await;
                    assert!(r.is_ok(), "{r:?}");
                }));
            }
            tasks
        },
    ));
    let sub = Subscriber::start(port, "watcher", "farm/gw1/#", false).await;
    let has = |topic: &str, text: Option<&str>| {
        sub.snapshot()
            .iter()
            .any(|m| m.topic == topic && text.is_none_or(|t| m.text() == t))
    };
    let settled = wait_until(Duration::from_secs(20), || {
        has("farm/gw1/good/level", None)
            && has("farm/gw1/dead/status", Some("stale"))
            && has("farm/gw1/garbled/status", Some("stale"))
    })
    .await;
    assert!(
        settled,
        "{:?}",
        sub.snapshot()
            .iter()
            .map(|m| (m.topic.clone(), m.text()))
            .collect::<Vec<_>>()
    );
    // Measure the good slave's cadence from here on, on the wire.
    let from = Instant::now();
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let to = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), app)
        .await
        .expect("gateway stops")
        .unwrap()
        .unwrap();
    sim.abort();

    let log = log.lock().unwrap();
    // The first request on the wire is the worked example: read holding 0 from slave 1...
    assert_eq!(
        log.requests[0].1,
        [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A]
    );
    // ...and so is its answer: 1234.
    assert_eq!(log.replies[0].1, [0x01, 0x03, 0x02, 0x04, 0xD2, 0x3A, 0xD9]);

    let in_window = |ts: Vec<Instant>| -> Vec<Instant> {
        ts.into_iter().filter(|t| *t >= from && *t <= to).collect()
    };
    let good = in_window(log.asked(1, 3, 0));
    let interval = Duration::from_millis(200);
    // A poll of the dead slave costs (1 + retries) x timeout; the garbling one answers at once.
    let others_budget = 2 * Duration::from_millis(100);
    let slack = if emulated() {
        Duration::from_millis(400)
    } else {
        Duration::from_millis(80)
    };
    let max_gap = good
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .expect("good slave polled in the window");
    assert!(
        max_gap <= interval + others_budget + slack,
        "good slave waited {max_gap:?} between polls"
    );
    let expected = (window.as_millis() / interval.as_millis()) as usize;
    eprintln!(
        "good slave: {} polls in {window:?}, longest gap {max_gap:?}; dead slave: {} requests",
        good.len(),
        in_window(log.asked(2, 3, 0)).len()
    );
    let min = if emulated() {
        expected / 2
    } else {
        expected * 4 / 5
    };
    assert!(
        good.len() >= min,
        "good slave polled {} times in {window:?}, expected about {expected}",
        good.len()
    );
    // The dead slave is polled with backoff, each poll with its one retry.
    let dead_all = log.asked(2, 3, 0);
    let dead = in_window(dead_all.clone());
    assert!(
        dead_all.len() >= 2,
        "dead slave asked {} times",
        dead_all.len()
    );
    assert!(
        dead.len() <= good.len() / 2,
        "dead slave asked {} times in the window, the good one {}",
        dead.len(),
        good.len()
    );
    drop(log);

    let got = sub.snapshot();
    let last = |topic: &str| {
        got.iter()
            .rev()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("nothing on {topic}"))
            .json()
    };
    let level = last("farm/gw1/good/level");
    assert_eq!(level["value"], 12.3, "{level}");
    assert_eq!(
        (level["unit"].as_str(), level["quality"].as_str()),
        (Some("%"), Some("good"))
    );
    let temp = last("farm/gw1/good/temperature");
    assert_eq!(
        (temp["value"].as_f64(), temp["unit"].as_str()),
        (Some(21.5), Some("degC"))
    );
    assert!(got
        .iter()
        .any(|m| m.topic == "farm/gw1/good/status" && m.text() == "online"));
    let readings_from = |d: &str| {
        got.iter()
            .filter(|m| {
                m.topic.starts_with(&format!("farm/gw1/{d}/")) && !m.topic.ends_with("/status")
            })
            .count()
    };
    assert_eq!((readings_from("dead"), readings_from("garbled")), (0, 0));
    assert!(readings_from("good") >= 2 * min);

    let garbled = errors_in_metrics("garbled");
    let dead = errors_in_metrics("dead");
    assert!(garbled.get("crc").copied().unwrap_or(0) >= 2, "{garbled:?}");
    assert!(!garbled.contains_key("timeout"), "{garbled:?}");
    assert!(dead.get("timeout").copied().unwrap_or(0) >= 2, "{dead:?}");
    assert!(!dead.contains_key("crc"), "{dead:?}");
    assert!(errors_in_metrics("good").is_empty());
}

#[tokio::test]
async fn exceptions_are_not_retried_and_the_gap_is_kept() {
    let AdapterConfig::Modbus(mut cfg) = device(&modbus_device(1, "")) else {
        unreachable!()
    };
    cfg.port.baud = 9600;
    // Holding 150 does not exist on the simulated slave.
    let mut missing = cfg.clone();
    missing.points[0].address = 150;
    let (sim_end, gateway_end) = pty();
    let log = Arc::new(Mutex::new(WireLog::default()));
    let sim = tokio::spawn(simulate(
        sim_end,
        BTreeMap::from([(1, Slave::Good)]),
        log.clone(),
    ));
    let mut poller = Poller::new(
        "/dev/ttyRS485",
        vec![("ok".into(), cfg.clone()), ("bad-map".into(), missing)],
        Instant::now(),
    );
    let mut master = modbus::Master::new(gateway_end, &cfg.port);
    let out = poller.poll(&mut master).await.unwrap();
    sim.abort();

    assert!(
        matches!(&out[0], Outcome::Values { device, values, .. } if device == "ok" && values.len() == 2),
        "{out:?}"
    );
    let Outcome::Failed {
        message, failures, ..
    } = &out[1]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*failures, 1);
    assert!(
        message.starts_with("/dev/ttyRS485 slave 1 (device bad-map): Holding registers 150..150: exception 0x02 (illegal data address"),
        "{message}"
    );
    let stats = poller.stats("bad-map").unwrap();
    assert_eq!((stats.requests, stats.exceptions), (1, 1), "{stats:?}");

    // 3.5 characters of silence (8N1 at 9600 baud: 3.65 ms) before every request.
    let log = log.lock().unwrap();
    assert_eq!(log.requests.len(), 3);
    for (reply, next) in log.replies.iter().zip(log.requests.iter().skip(1)) {
        let gap = next.0 - reply.0;
        assert!(
            gap >= Duration::from_micros(3600),
            "only {gap:?} between frames"
        );
    }
}

#[test]
fn modbus_config_errors_point_at_file_line_and_column() {
    let text = "site: s\ngateway: g\ndevices:\n  a:\n    modbus:\n      port: /dev/ttyRS485\n      slave: 1\n      registers:\n        level: { address: 0 }\n  b:\n    modbus:\n      port: /dev/ttyRS485\n      baud: 19200\n      slave: 2\n      registers:\n        level: { address: 0 }\n  c:\n    serial:\n      port: /dev/ttyRS485\n      protocol: a02yyuw\n  d:\n    modbus:\n      port: /dev/ttyUSB0\n      slave: 248\n      registers:\n        on: { table: coil, address: 0, type: u16 }\n        flow: { table: input, address: 65535, type: f32 }\n        bad: { table: holdings, address: 1 }\n";
    super::support::assert_config_errors(
        text,
        &[
        "site.yaml:12:13: devices.b.modbus.port: /dev/ttyRS485 19200 8N1 here, but /dev/ttyRS485 9600 8N1 for device `a` on the same line",
        "site.yaml:19:13: devices.c.serial.port: /dev/ttyRS485 is already the port of device `a`",
        "site.yaml:24:14: devices.d.modbus.slave: ",
        "site.yaml:26:46: devices.d.modbus.registers.on.type: coils and discrete inputs are `bool`",
        "site.yaml:27:40: devices.d.modbus.registers.flow.address: the value runs past register 65535",
        "site.yaml:28:23: devices.d.modbus.registers.bad.table: `holdings` is not one of",
        ],
    );
}

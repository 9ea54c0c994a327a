//! Serial protocol throughput and Modbus poll-cycle time:
//! - lines/s through each line parser (splitting included), frames/s through the A02YYUW profile
//!   (with noise between frames) and a length-field + CRC-16 frame spec, all in memory;
//! - the Modbus RTU poll cycle for N slaves (one 2-register read each) against a simulator on a
//!   pty, at 9600 and 115200 baud. A pty does not pace bytes at the baud rate, so next to the
//!   measured cycle the wire-time model is printed: what the same cycle takes on a real line.
//!
//! Usage: `cargo bench --bench serial` (or `EDGEGATE_BENCH=1`); `-- --cycles N` (default 50).

use std::time::{Duration, Instant};

use edgegate::adapters::serial::modbus::{self, Poller};
use edgegate::adapters::serial::{checksum, Decoder, SerialConfig};
use edgegate::adapters::AdapterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn adapter(section: &str) -> AdapterConfig {
    let mut text = String::from("site: s\ngateway: g\ndevices:\n  dev:\n");
    for line in section.lines() {
        text += &format!("    {line}\n");
    }
    let cfg = edgegate::site::load_str(&text, "bench.yaml").expect("bench config");
    cfg.devices[0].adapter.clone()
}

/// A line or frame device on a port that is never opened; `rest` at 2 spaces.
fn dev(rest: &str) -> SerialConfig {
    serial(&format!(
        "serial:\n  port: /dev/null\n  interval: 0s\n{rest}"
    ))
}

fn serial(section: &str) -> SerialConfig {
    match adapter(section) {
        AdapterConfig::Serial(c) => c,
        _ => unreachable!(),
    }
}

/// Feeds `input` in 4 KiB reads `rounds` times; returns (items, values, errors, seconds).
fn run_decoder(cfg: &SerialConfig, input: &[u8], rounds: usize) -> (u64, u64, u64, f64) {
    let mut d = Decoder::new(cfg);
    let (mut items, mut values, mut errors) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for _ in 0..rounds {
        for chunk in input.chunks(4096) {
            d.push(chunk, |r| match r {
                Ok(v) => {
                    items += 1;
                    values += v.len() as u64;
                }
                Err(_) => errors += 1,
            });
        }
    }
    (items, values, errors, start.elapsed().as_secs_f64())
}

fn nmea(body: &str) -> String {
    let x = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{x:02X}\r\n")
}

/// CRC-16/MODBUS as sent on the wire, low byte first (the gateway's own: the tests check it
/// against an independent one).
fn crc16(data: &[u8]) -> [u8; 2] {
    checksum::crc16_modbus(data).to_le_bytes()
}

fn parsers() {
    let n = 20_000usize;
    let cases: Vec<(&str, SerialConfig, Vec<u8>)> = vec![
        (
            "regex `^R(?P<distance>\\d{4})$` (MaxBotix)",
            dev("  protocol: line\n  format: regex\n  pattern: '^R(?P<distance>\\d{4})$'\n  fields:\n    distance: {}\n") ,
            (0..n).map(|i| format!("R{:04}\r", 300 + i % 4000)).collect::<String>().into_bytes(),
        ),
        (
            "key_value, 3 fields",
            dev("  protocol: line\n  format: key_value\n  fields:\n    t: { key: T }\n    rh: { key: RH }\n    p: { key: P }\n") ,
            (0..n).map(|i| format!("T={}.5 RH=40.{} P=1013.2\r\n", i % 40, i % 10)).collect::<String>().into_bytes(),
        ),
        (
            "csv, 3 of 4 columns",
            dev("  protocol: line\n  format: csv\n  fields:\n    a: { column: 1 }\n    b: { column: 2 }\n    c: { column: 3 }\n") ,
            (0..n).map(|i| format!("10:00:{:02},4.{},7.01,{}\n", i % 60, i % 100, 500 + i % 50)).collect::<String>().into_bytes(),
        ),
        (
            "nmea, checksum + 2 columns",
            dev("  protocol: line\n  format: nmea\n  sentence: WIMDA\n  fields:\n    p: { column: 3 }\n    t: { column: 5 }\n") ,
            (0..n).map(|i| nmea(&format!("WIMDA,30.12,I,1.0{},B,2{}.5,C", i % 10, i % 10))).collect::<String>().into_bytes(),
        ),
    ];
    println!("| parser | lines/s | MB/s |");
    println!("|---|---|---|");
    for (name, cfg, input) in &cases {
        let rounds = 25;
        let (items, _, errors, secs) = run_decoder(cfg, input, rounds);
        assert_eq!((items as usize, errors), (n * rounds, 0), "{name}");
        println!(
            "| {name} | {:.0} | {:.1} |",
            items as f64 / secs,
            (input.len() * rounds) as f64 / secs / 1e6
        );
    }

    let a02 = dev("  protocol: a02yyuw\n  mount_height_m: 2\n");
    let mut clean = Vec::new();
    let mut noisy = Vec::new();
    for i in 0..n {
        let mm = (300 + i % 4000) as u16;
        let [h, l] = mm.to_be_bytes();
        let f = [0xFF, h, l, (0xFFu16 + u16::from(h) + u16::from(l)) as u8];
        clean.extend(f);
        noisy.extend([0x13, 0x37]);
        noisy.extend(f);
    }
    let spec = dev("  protocol: frame\n  header: \"AA 55\"\n  length_field: { offset: 2, width: 1, adjust: 3 }\n  checksum: crc16_modbus\n  checksum_from: 2\n  fields:\n    t: { offset: 4, type: i16, scale: 0.1 }\n    h: { offset: 6, type: u16, scale: 0.1 }\n") ;
    let mut spec_frames = Vec::new();
    for i in 0..n {
        let mut f = vec![0xAA, 0x55, 7, i as u8];
        f.extend(((i % 400) as i16).to_be_bytes());
        f.extend(((i % 1000) as u16).to_be_bytes());
        let c = crc16(&f[2..]);
        f.extend(c);
        spec_frames.extend(f);
    }
    println!();
    println!("| frames | frames/s | MB/s |");
    println!("|---|---|---|");
    for (name, cfg, input) in [
        ("A02YYUW, back to back", &a02, &clean),
        ("A02YYUW, 2 noise bytes between frames", &a02, &noisy),
        (
            "AA 55 + length field + CRC-16, 2 fields",
            &spec,
            &spec_frames,
        ),
    ] {
        let rounds = 50;
        let (items, _, _, secs) = run_decoder(cfg, input, rounds);
        assert_eq!(items as usize, n * rounds, "{name}");
        println!(
            "| {name} | {:.0} | {:.1} |",
            items as f64 / secs,
            (input.len() * rounds) as f64 / secs / 1e6
        );
    }
}

/// Answers every request for holding registers with zeros, as fast as it can.
async fn slaves(mut port: tokio_serial::SerialStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while let Ok(n) = port.read(&mut chunk).await {
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 8 {
            let req: Vec<u8> = buf.drain(..8).collect();
            let count = u16::from_be_bytes([req[4], req[5]]);
            let mut f = vec![req[0], req[1], (2 * count) as u8];
            f.extend(std::iter::repeat_n(0u8, 2 * usize::from(count)));
            let c = crc16(&f);
            f.extend(c);
            if port.write_all(&f).await.is_err() {
                return;
            }
        }
    }
}

async fn poll_cycles(slaves_n: u8, baud: u32, cycles: u64) -> (Duration, Duration) {
    let (sim, gw) = tokio_serial::SerialStream::pair().expect("pty pair");
    let sim = tokio::spawn(slaves(sim));
    let mut devices = Vec::new();
    let mut port = None;
    for s in 1..=slaves_n {
        let AdapterConfig::Modbus(c) = adapter(&format!(
            "modbus:\n  port: /dev/ttyRS485\n  baud: {baud}\n  slave: {s}\n  interval: 10ms\n  timeout: 200ms\n  registers:\n    a: {{ address: 0 }}\n    b: {{ address: 1 }}\n"
        )) else {
            unreachable!()
        };
        port = Some(c.port.clone());
        devices.push((format!("s{s}"), c));
    }
    let port = port.unwrap();
    let mut poller = Poller::new("/dev/ttyRS485", devices, tokio::time::Instant::now());
    let mut master = modbus::Master::new(gw, &port);
    // One cycle: every slave polled once (all are due: their interval is shorter than a cycle).
    let mut total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    for i in 0..=cycles {
        let start = Instant::now();
        let out = poller.poll(&mut master).await.expect("port");
        let took = start.elapsed();
        assert_eq!(out.len(), usize::from(slaves_n));
        if i > 0 {
            total += took;
            worst = worst.max(took);
        }
        tokio::time::sleep(Duration::from_millis(11)).await;
    }
    sim.abort();
    (total / cycles as u32, worst)
}

/// The pty's own cost: one request and its reply through the simulator, without the master.
async fn pty_round_trip(n: u32) -> Duration {
    let (sim, mut gw) = tokio_serial::SerialStream::pair().expect("pty pair");
    let sim = tokio::spawn(slaves(sim));
    let req = [0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0xC4, 0x0B];
    let mut reply = [0u8; 9];
    let start = Instant::now();
    for _ in 0..n {
        gw.write_all(&req).await.unwrap();
        gw.read_exact(&mut reply).await.unwrap();
    }
    sim.abort();
    start.elapsed() / n
}

/// The same cycle on a real line: per slave the 3.5-character gap, the 8-byte request and the
/// 9-byte reply (2 registers), 8N1 (10 bits a character); the slave's own turnaround not counted.
fn wire_model(slaves_n: u8, baud: u32) -> Duration {
    let char_ns = 10_000_000_000u64 / u64::from(baud);
    let gap_ns = if baud > 19_200 {
        1_750_000
    } else {
        char_ns * 7 / 2
    };
    Duration::from_nanos(u64::from(slaves_n) * (gap_ns + 17 * char_ns))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo test --all-targets` runs benches as tests; keep that instant and quiet.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("EDGEGATE_BENCH").is_err() {
        return;
    }
    parsers();
    let cycles = arg("--cycles", 50);
    println!();
    println!(
        "pty round trip (request + reply through the simulator, no master): {:.3} ms",
        pty_round_trip(500).await.as_secs_f64() * 1e3
    );
    println!();
    println!("| slaves | baud | cycle on a real line (wire-time model) | measured on a pty (mean / worst) | of which t3.5 gaps | rest, per request |");
    println!("|---|---|---|---|---|---|");
    for baud in [9600u32, 115_200] {
        for n in [1u8, 4, 16] {
            let (mean, worst) = poll_cycles(n, baud, cycles).await;
            let model = wire_model(n, baud);
            let char_ns = 10_000_000_000u64 / u64::from(baud);
            let gap = if baud > 19_200 {
                1_750_000
            } else {
                char_ns * 7 / 2
            };
            // The first request of a cycle finds the line quiet already (the bench pauses
            // between cycles); every further one waits the gap.
            let gaps = Duration::from_nanos(u64::from(n - 1) * gap);
            println!(
                "| {n} | {baud} | {:.1} ms | {:.1} / {:.1} ms | {:.1} ms | {:.2} ms |",
                model.as_secs_f64() * 1e3,
                mean.as_secs_f64() * 1e3,
                worst.as_secs_f64() * 1e3,
                gaps.as_secs_f64() * 1e3,
                mean.saturating_sub(gaps).as_secs_f64() * 1e3 / f64::from(n)
            );
        }
    }
}

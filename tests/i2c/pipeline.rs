//! The bus worker's schedule, `sensors scan`, config, and mocked buses end to end to the local
//! broker.

use std::time::Duration;

use edgegate::adapters::i2c::worker::{self, BusWorker, Outcome};
use edgegate::adapters::i2c::{scan, I2cConfig, ModelConfig};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::support::{gateway_command, wait_until, Subscriber};
use super::NACK;

fn tmp102(address: u8, interval: Duration) -> I2cConfig {
    I2cConfig {
        bus: "/dev/i2c-1".into(),
        address,
        model: ModelConfig::Tmp102,
        interval,
    }
}

fn served(outcomes: &[Outcome]) -> Vec<(String, bool)> {
    outcomes
        .iter()
        .map(|o| match o {
            Outcome::Values { device, .. } => (device.clone(), true),
            Outcome::Failed { device, .. } => (device.clone(), false),
        })
        .collect()
}

#[test]
fn a_missing_device_backs_off_while_the_other_goes_on() {
    let init = |a: u8| T::write(a, vec![0x01, 0x60, 0xA0]);
    let temp = |a: u8| T::write_read(a, vec![0x00], vec![0x19, 0x00]);
    let trace = [
        // t=0: a is set up and read; b does not answer.
        init(0x48),
        temp(0x48),
        init(0x49).with_error(NACK),
        // t=1 s: a; b again (first backoff: one interval).
        temp(0x48),
        init(0x49).with_error(NACK),
        // t=2 s: a only: b waits two intervals now.
        temp(0x48),
        // t=3 s: a, and b answers: set up again, then read.
        temp(0x48),
        init(0x49),
        temp(0x49),
    ];
    let mut bus = Mock::new(&trace);
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let devices = vec![
        ("a".to_string(), tmp102(0x48, s)),
        ("b".to_string(), tmp102(0x49, s)),
    ];
    let mut w = BusWorker::new("/dev/i2c-1", devices, t0);
    let mut d = NoopDelay::new();

    let o = w.poll(&mut bus, &mut d, t0);
    assert_eq!(served(&o), [("a".into(), true), ("b".into(), false)]);
    let Outcome::Failed {
        message,
        failures,
        retry_in,
        ..
    } = &o[1]
    else {
        unreachable!()
    };
    assert_eq!((*failures, *retry_in), (1, s));
    assert!(
        message.starts_with("/dev/i2c-1 0x49 (tmp102, device b): ")
            && message.contains("wrong address"),
        "{message}"
    );

    let o = w.poll(&mut bus, &mut d, t0 + s);
    assert_eq!(served(&o), [("a".into(), true), ("b".into(), false)]);
    assert!(matches!(o[1], Outcome::Failed { failures: 2, retry_in, .. } if retry_in == 2 * s));
    let o = w.poll(&mut bus, &mut d, t0 + 2 * s);
    assert_eq!(served(&o), [("a".into(), true)]);
    assert_eq!(w.next_due(), Some(t0 + 3 * s));
    let o = w.poll(&mut bus, &mut d, t0 + 3 * s);
    assert_eq!(served(&o), [("a".into(), true), ("b".into(), true)]);
    assert!(
        matches!(&o[1], Outcome::Values { recovered_after: 2, values, .. } if values[0].value == 25.0)
    );
    bus.done();
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let s = Duration::from_secs(1);
    let got: Vec<u64> = (1..=12)
        .map(|n| edgegate::adapters::poll::backoff(s, n, Duration::from_secs(300)).as_secs())
        .collect();
    assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
}

#[test]
fn scan_lists_responding_addresses_with_their_models() {
    let present = [0x29u8, 0x44, 0x48, 0x50, 0x76];
    let trace: Vec<T> = (scan::FIRST..=scan::LAST)
        .map(|a| {
            if present.contains(&a) {
                T::read(a, vec![0x00])
            } else {
                T::read(a, vec![0x00]).with_error(NACK)
            }
        })
        .collect();
    let mut bus = Mock::new(&trace);
    let report = scan::report("/dev/i2c-1", &mut bus);
    bus.done();
    assert_eq!(
        report,
        "0x29  vl53l0x\n\
         0x44  sht3x, sht4x\n\
         0x48  tmp102, ads1115\n\
         0x50  (no edgegate driver)\n\
         0x76  bme280\n\
         /dev/i2c-1: 5 devices answered\n"
    );
}

#[test]
fn scan_of_a_missing_bus_says_why_and_exits_1() {
    let out = gateway_command()
        .args(["sensors", "scan", "--bus", "/nonexistent/i2c-7"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("I2C bus /nonexistent/i2c-7 does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("dtparam=i2c_arm=on"), "{stderr}");
}

#[test]
fn bus_open_errors_name_the_bus_and_the_likely_cause() {
    let Err(e) = worker::open_linux("/nonexistent/i2c-3") else {
        panic!("a missing bus opened")
    };
    let m = worker::open_error("/nonexistent/i2c-3", &e);
    assert!(
        m.contains("/nonexistent/i2c-3 does not exist") && m.contains("raspi-config"),
        "{m}"
    );
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let m = worker::open_error("/dev/i2c-1", &denied);
    assert!(m.contains("/dev/i2c-1") && m.contains("`i2c` group"), "{m}");
}

#[test]
fn example_sites_pass_check() {
    for f in ["i2c.yaml", "onewire.yaml"] {
        let path = format!("{}/config/examples/{f}", env!("CARGO_MANIFEST_DIR"));
        let out = gateway_command()
            .args(["check", "--config", &path])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{f}: {stderr}");
    }
}

#[test]
fn sensor_config_errors_point_at_file_line_and_column() {
    let text = "site: s\ngateway: g\ndevices:\n  t1:\n    i2c:\n      model: tmp102\n      address: 0x44\n  t2:\n    i2c:\n      model: sht31\n  lvl:\n    i2c:\n      model: ads1115\n      shunt_ohms: 250\n      span_m: 3\n  tof:\n    i2c:\n      model: vl53l0x\n      mount_height_m: 1.0\n      tank_height_m: 1.5\n      shunt_ohms: 150\n  p:\n    onewire:\n      id: 10-12\n";
    super::support::assert_config_errors(
        text,
        &[
        "site.yaml:7:16: devices.t1.i2c.address: a tmp102 answers only at 0x48, 0x49, 0x4A, 0x4B, got 0x44",
        "site.yaml:10:14: devices.t2.i2c.model: `sht31` is not one of",
        "site.yaml:14:19: devices.lvl.i2c.shunt_ohms: 21 mA across 250 ohm is 5.250 V, beyond the 4.096 V full scale",
        "site.yaml:20:22: devices.tof.i2c.tank_height_m: must be at most mount_height_m (1), got 1.5",
        "site.yaml:21:7: devices.tof.i2c: unknown key `shunt_ohms`",
        "site.yaml:24:11: devices.p.onewire.id: `10-12` is not a DS18B20 id",
        ],
    );
}

const MOCK_BUS: &str = "mock-bus";

fn site(port: u16, dir: &std::path::Path) -> String {
    let mut y = format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{port}\nbuffer:\n  dir: {}\ndevices:\n",
        dir.display()
    );
    let devices = [
        ("coldroom", "sht3x", MOCK_BUS, "", "1h"),
        ("ghost", "tmp102", MOCK_BUS, "address: 0x4A", "1h"),
        ("freezer", "tmp102", MOCK_BUS, "address: 0x49", "1h"),
        (
            "tank",
            "ads1115",
            MOCK_BUS,
            "shunt_ohms: 150\n      span_m: 4",
            "1h",
        ),
        ("attic", "sht4x", "/nonexistent/i2c-7", "", "300ms"),
    ];
    for (id, model, bus, extra, interval) in devices {
        y += &format!(
            "  {id}:\n    i2c:\n      model: {model}\n      bus: {bus}\n      interval: {interval}\n      {extra}\n"
        );
    }
    y
}

/// One round on the mocked bus, in config order (the silent `ghost` between the others);
/// hourly intervals keep it to one round.
fn one_round() -> Vec<T> {
    vec![
        T::write(0x44, vec![0x30, 0xA2]),
        T::write(0x44, vec![0x24, 0x00]),
        T::read(0x44, vec![0x66, 0x66, 0x93, 0x80, 0x00, 0xA2]),
        T::write(0x4A, vec![0x01, 0x60, 0xA0]).with_error(NACK),
        T::write(0x49, vec![0x01, 0x60, 0xA0]),
        T::write_read(0x49, vec![0x00], vec![0xE7, 0x00]),
        T::write_read(0x48, vec![0x01], vec![0x85, 0x83]),
        T::write(0x48, vec![0x01, 0xC3, 0x83]),
        T::write_read(0x48, vec![0x01], vec![0xC3, 0x83]),
        T::write_read(0x48, vec![0x00], 14400i16.to_be_bytes().to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mocked_bus_readings_reach_the_local_broker_normalized() {
    let dir = tempfile::tempdir().unwrap();
    let port = super::support::free_port();
    let cfg = edgegate::site::load_str(&site(port, dir.path()), "site.yaml").unwrap();
    let mock = Mock::new(&one_round());
    let mut check = mock.clone();
    let stop = CancellationToken::new();
    let app = tokio::spawn(edgegate::app::run_with(
        cfg,
        stop.clone(),
        move |devices, tx, shutdown| {
            edgegate::adapters::i2c::by_bus(devices)
                .into_iter()
                .map(|(bus, list)| {
                    if bus == MOCK_BUS {
                        let m = mock.clone();
                        worker::spawn(
                            bus,
                            list,
                            move || Ok(m.clone()),
                            tx.clone(),
                            shutdown.clone(),
                        )
                    } else {
                        let path = bus.clone();
                        worker::spawn(
                            bus,
                            list,
                            move || worker::open_linux(&path),
                            tx.clone(),
                            shutdown.clone(),
                        )
                    }
                })
                .collect()
        },
    ));

    let sub = Subscriber::start(port, "watcher", "farm/gw1/#", false).await;
    let wanted = [
        "farm/gw1/coldroom/temperature",
        "farm/gw1/coldroom/humidity",
        "farm/gw1/freezer/temperature",
        "farm/gw1/tank/level",
        "farm/gw1/tank/current",
    ];
    let stale = |s: &Subscriber| {
        s.snapshot()
            .iter()
            .any(|m| m.topic == "farm/gw1/attic/status" && m.text() == "stale")
    };
    let all = wait_until(Duration::from_secs(15), || {
        let got = sub.snapshot();
        wanted.iter().all(|t| got.iter().any(|m| m.topic == *t)) && stale(&sub)
    })
    .await;
    let got = sub.snapshot();
    assert!(
        all,
        "got only {:?}",
        got.iter().map(|m| (&m.topic, m.text())).collect::<Vec<_>>()
    );

    let json = |topic: &str| got.iter().find(|m| m.topic == topic).unwrap().json();
    let expect = [
        ("farm/gw1/coldroom/temperature", 25.0, "degC"),
        ("farm/gw1/coldroom/humidity", 50.0, "%"),
        ("farm/gw1/freezer/temperature", -25.0, "degC"),
        ("farm/gw1/tank/level", 50.0, "%"),
        ("farm/gw1/tank/current", 12.0, "mA"),
    ];
    for (topic, value, unit) in expect {
        let j = json(topic);
        let v = j["value"].as_f64().unwrap();
        assert!((v - value).abs() < 0.01, "{topic}: {j}");
        assert_eq!(j["unit"], unit, "{topic}: {j}");
        assert_eq!(j["quality"], "good", "{topic}: {j}");
        assert!(
            j["seq"].as_u64().is_some() && j["ts"].is_string(),
            "{topic}: {j}"
        );
    }
    assert!(got
        .iter()
        .any(|m| m.topic == "farm/gw1/coldroom/status" && m.text() == "online"));
    // The silent chip on the mocked bus produced nothing, and did not stop the others.
    assert!(!got
        .iter()
        .any(|m| m.topic.starts_with("farm/gw1/ghost/") && m.topic != "farm/gw1/ghost/status"));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), app)
        .await
        .expect("gateway stops")
        .unwrap()
        .unwrap();
    check.done();
}

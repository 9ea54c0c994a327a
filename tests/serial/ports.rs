//! The real gateway binary opening a pty by path (native runs only: under qemu-user a serial
//! port cannot be opened by path), losing it and finding it again; the examples.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_serial::{SerialPort, SerialStream};

use super::pty;
use super::support::{emulated, free_port, gateway_command, wait_until, Gateway, Subscriber};

#[test]
fn example_sites_pass_check() {
    for f in ["serial-ascii.yaml", "serial-frames.yaml", "modbus-rtu.yaml"] {
        let path = format!("{}/config/examples/{f}", env!("CARGO_MANIFEST_DIR"));
        let out = gateway_command()
            .args(["check", "--config", &path])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{f}: {stderr}");
    }
}

fn a02(mm: u16) -> [u8; 4] {
    let [h, l] = mm.to_be_bytes();
    [0xFF, h, l, (0xFFu16 + u16::from(h) + u16::from(l)) as u8]
}

/// A new pty whose gateway end is reachable at `link`: the sensor is plugged in. Writes frames
/// of `mm` (with noise and a corrupt frame between them) until the task is aborted, which
/// closes the pty: the sensor is unplugged.
fn plug(link: &Path, mm: u16) -> tokio::task::JoinHandle<()> {
    let (mut sensor, gateway): (SerialStream, SerialStream) = pty();
    let name = gateway.name().expect("pty name");
    drop(gateway);
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&name, link).unwrap();
    tokio::spawn(async move {
        let mut bad = a02(mm);
        bad[3] ^= 0x01;
        loop {
            let mut burst = vec![0x13, 0x37];
            burst.extend(a02(mm));
            burst.extend(bad);
            if sensor.write_all(&burst).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reopens_a_port_that_goes_away_and_comes_back() {
    if emulated() {
        eprintln!("skipped under emulation: qemu-user cannot open a serial port by path");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyTANK");
    let port = free_port();
    let yaml = format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{port}\nbuffer:\n  dir: data\ndevices:\n  tank:\n    serial:\n      port: {}\n      protocol: a02yyuw\n      interval: 100ms\n      mount_height_m: 2.0\n      tank_height_m: 1.8\n    points:\n      level:\n        decimals: 1\n",
        link.display()
    );
    let sensor = plug(&link, 1100);
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    let sub = Subscriber::start(port, "watcher", "farm/gw1/#", false).await;
    let level_is = |sub: &Subscriber, want: f64| {
        sub.snapshot()
            .iter()
            .any(|m| m.topic == "farm/gw1/tank/level" && m.json()["value"].as_f64() == Some(want))
    };
    let status_is = |sub: &Subscriber, want: &str| {
        sub.snapshot()
            .iter()
            .rev()
            .find(|m| m.topic == "farm/gw1/tank/status")
            .is_some_and(|m| m.text() == want)
    };
    assert!(
        wait_until(Duration::from_secs(15), || level_is(&sub, 50.0)).await,
        "no level of 50 %\n{}",
        gw.log()
    );
    let first = sub
        .snapshot()
        .into_iter()
        .find(|m| m.topic == "farm/gw1/tank/distance")
        .unwrap()
        .json();
    assert_eq!(
        (first["value"].as_f64(), first["unit"].as_str()),
        (Some(1100.0), Some("mm"))
    );

    // Unplugged: the port closes and its path disappears; the device goes stale.
    sensor.abort();
    let _ = sensor.await;
    std::fs::remove_file(&link).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || status_is(&sub, "stale")).await,
        "not stale after the unplug\n{}",
        gw.log()
    );
    // Plugged in again, as a new pty at the same path, with the tank fuller.
    let sensor = plug(&link, 560);
    assert!(
        wait_until(Duration::from_secs(20), || level_is(&sub, 80.0)).await,
        "no readings after the replug\n{}",
        gw.log()
    );
    assert!(status_is(&sub, "online"));
    sensor.abort();
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0));

    let log = gw.log();
    let origin = format!("serial port {} (device tank)", link.display());
    let has = |what: &str| log.lines().any(|l| l.contains(&origin) && l.contains(what));
    assert!(has("unplugged? reopening"), "{log}");
    assert!(has("open again"), "{log}");
    assert!(
        log.contains(&format!("serial port {} does not exist", link.display())),
        "{log}"
    );
    // Noise came with every frame; the log says so once, not a hundred times.
    let loud = log
        .lines()
        .filter(|l| l.contains(&origin) && l.contains("more errors like it"))
        .count();
    assert_eq!(loud, 1, "{log}");
}

/// A new pty at `link` with the slave simulator on its other end: the RS-485 adapter is plugged
/// in. Aborting the task closes the pty: the adapter is unplugged.
fn plug_bus(link: &Path) -> tokio::task::JoinHandle<()> {
    use super::modbus::{simulate, Slave};
    let (sim_end, gateway): (SerialStream, SerialStream) = pty();
    let name = gateway.name().expect("pty name");
    drop(gateway);
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&name, link).unwrap();
    let slaves = std::collections::BTreeMap::from([(1, Slave::Good)]);
    tokio::spawn(simulate(sim_end, slaves, Default::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reopens_an_rs485_adapter_that_is_replugged() {
    if emulated() {
        eprintln!("skipped under emulation: qemu-user cannot open a serial port by path");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyRS485");
    let port = free_port();
    let yaml = format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{port}\nbuffer:\n  dir: data\ndevices:\n  tank:\n    modbus:\n      port: {}\n      baud: 19200\n      parity: even\n      slave: 1\n      interval: 200ms\n      timeout: 100ms\n      registers:\n        level: {{ address: 0, scale: 0.01, unit: \"%\" }}\n",
        link.display()
    );
    let bus = plug_bus(&link);
    let mut gw = Gateway::new(dir.path(), &yaml);
    gw.start();
    let sub = Subscriber::start(port, "watcher", "farm/gw1/#", false).await;
    let levels = |sub: &Subscriber| {
        sub.snapshot()
            .iter()
            .filter(|m| m.topic == "farm/gw1/tank/level")
            .count()
    };
    let last_status = |sub: &Subscriber| {
        sub.snapshot()
            .iter()
            .rev()
            .find(|m| m.topic == "farm/gw1/tank/status")
            .map(|m| m.text())
    };
    assert!(
        wait_until(Duration::from_secs(15), || levels(&sub) > 0).await,
        "no level\n{}",
        gw.log()
    );
    let level = sub
        .snapshot()
        .into_iter()
        .find(|m| m.topic == "farm/gw1/tank/level")
        .unwrap()
        .json();
    assert_eq!(level["value"], 12.34, "{level}");

    bus.abort();
    let _ = bus.await;
    std::fs::remove_file(&link).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || last_status(&sub).as_deref()
            == Some("stale"))
        .await,
        "not stale after the unplug\n{}",
        gw.log()
    );
    let before = levels(&sub);
    let bus = plug_bus(&link);
    assert!(
        wait_until(Duration::from_secs(20), || levels(&sub) > before
            && last_status(&sub).as_deref() == Some("online"))
        .await,
        "no readings after the replug\n{}",
        gw.log()
    );
    bus.abort();
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0));
    let log = gw.log();
    let origin = format!("serial port {} (device tank)", link.display());
    assert!(
        log.lines()
            .any(|l| l.contains(&origin) && l.contains("unplugged? reopening")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&origin) && l.contains("open again")),
        "{log}"
    );
}

//! Level conversions (4-20 mA, time of flight) and DS18B20 probes in a fake sysfs tree.

use std::path::Path;
use std::time::Duration;

use edgegate::adapters::onewire::{self, OneWireConfig};

use super::{close, loop_150_ohm, tank_1m};

#[test]
fn four_to_twenty_ma_at_0_50_100_percent_and_out_of_range() {
    let c = loop_150_ohm();
    close(c.level(4.0).unwrap(), 0.0, 1e-9);
    close(c.level(12.0).unwrap(), 50.0, 1e-9);
    close(c.level(20.0).unwrap(), 100.0, 1e-9);
    // Between NAMUR's limits but outside the span: a value, out of range.
    close(c.level(3.8).unwrap(), -1.25, 1e-9);
    close(c.level(21.0).unwrap(), 106.25, 1e-9);
    // Beyond them: a fault.
    assert!(c
        .level(3.59)
        .unwrap_err()
        .to_string()
        .contains("wiring fault"));
    assert!(c.level(0.0).is_err());
    assert!(c.level(21.01).is_err());
}

#[test]
fn four_to_twenty_ma_with_tank_geometry() {
    // Transmitter 0.5 m above the bottom, 0..2 m span, tank full at 2.5 m.
    let mut c = loop_150_ohm();
    c.span_m = 2.0;
    c.sensor_offset_m = 0.5;
    c.tank_height_m = 2.5;
    close(c.level(4.0).unwrap(), 20.0, 1e-9);
    close(c.level(12.0).unwrap(), 60.0, 1e-9);
    close(c.level(20.0).unwrap(), 100.0, 1e-9);
}

#[test]
fn time_of_flight_at_0_50_100_percent_and_out_of_range() {
    let m = tank_1m();
    close(m.level(1200.0), 0.0, 1e-9);
    close(m.level(700.0), 50.0, 1e-9);
    close(m.level(200.0), 100.0, 1e-9);
    close(m.level(150.0), 105.0, 1e-9);
    close(m.level(1500.0), -30.0, 1e-9);
}

const ID: &str = "28-0316a2795aff";

fn probe(root: &Path) -> OneWireConfig {
    OneWireConfig {
        id: ID.into(),
        root: root.to_path_buf(),
        interval: Duration::from_secs(1),
    }
}

fn write_slave(root: &Path, text: &str) {
    let dir = root.join(ID);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("w1_slave"), text).unwrap();
}

#[test]
fn ds18b20_good_crc_no_power_on_value_and_vanished_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cfg = probe(root);
    write_slave(
        root,
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
    );
    assert_eq!(onewire::read_probe(&cfg).unwrap(), 23.125);

    write_slave(
        root,
        "90 fc 4b 46 7f ff 0c 10 1c : crc=1c YES\n90 fc 4b 46 7f ff 0c 10 1c t=-55000\n",
    );
    assert_eq!(onewire::read_probe(&cfg).unwrap(), -55.0);

    write_slave(
        root,
        "72 01 4b 46 7f ff 0e 10 57 : crc=12 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
    );
    let e = onewire::read_probe(&cfg).unwrap_err();
    assert!(matches!(e, onewire::Error::Crc { .. }), "{e:?}");
    assert!(e.to_string().contains(ID), "{e}");

    write_slave(
        root,
        "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
    );
    let e = onewire::read_probe(&cfg).unwrap_err();
    assert!(e.to_string().contains("power-on value"), "{e}");

    write_slave(
        root,
        "ff ff ff ff ff ff ff ff ff : crc=c9 YES\nff ff ff ff ff ff ff ff ff t=-127000\n",
    );
    assert!(matches!(
        onewire::read_probe(&cfg),
        Err(onewire::Error::NoAnswer { .. })
    ));

    write_slave(root, "garbage\n");
    assert!(matches!(
        onewire::read_probe(&cfg),
        Err(onewire::Error::Format { .. })
    ));

    // The probe is unplugged: the kernel removes its directory.
    std::fs::remove_dir_all(root.join(ID)).unwrap();
    let e = onewire::read_probe(&cfg).unwrap_err();
    assert!(matches!(e, onewire::Error::Missing(_)), "{e:?}");
    assert!(
        e.to_string().contains(ID) && e.to_string().contains("not found"),
        "{e}"
    );

    // No 1-Wire master at all: the hint is the overlay.
    let e = onewire::read_probe(&probe(&root.join("w1-missing"))).unwrap_err();
    assert!(e.to_string().contains("dtoverlay=w1-gpio"), "{e}");
}

#[tokio::test]
async fn ds18b20_task_skips_bad_reads_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    write_slave(
        &root,
        "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(onewire::run("milk".into(), probe(&root), tx, stop.clone()));
    // The 85.000 read produced nothing; after the retry (1 s) the good value comes through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err());
    write_slave(
        &root,
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
    );
    let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.device.as_str(), r.quantity.as_str(), r.value),
        ("milk", "temperature", 23.125)
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

//! Device paths: found in the raw config, so every adapter's `/dev/...` settings are checked
//! without doctor knowing each adapter's schema (new adapters are covered as they come).

use std::path::Path;

use super::Check;
use crate::config::yaml::{self, Node, Value};

/// (device id, key path, device path) for every string under `devices` starting with `/dev/`.
pub fn paths(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let Ok(doc) = yaml::parse(text) else {
        return out;
    };
    let Some(Value::Map(top)) = doc.root.map(|r| r.value) else {
        return out;
    };
    let Some(devices) = top.iter().find(|e| e.key == "devices") else {
        return out;
    };
    if let Value::Map(devs) = &devices.value.value {
        for d in devs {
            walk(&d.key, &d.key, &d.value, &mut out);
        }
    }
    out
}

fn walk(device: &str, path: &str, node: &Node, out: &mut Vec<(String, String, String)>) {
    match &node.value {
        Value::Scalar { text, .. } if text.starts_with("/dev/") => {
            out.push((device.to_string(), path.to_string(), text.clone()));
        }
        Value::Scalar { .. } => {}
        Value::Seq(items) => {
            for (i, n) in items.iter().enumerate() {
                walk(device, &format!("{path}[{i}]"), n, out);
            }
        }
        Value::Map(entries) => {
            for e in entries {
                walk(device, &format!("{path}.{}", e.key), &e.value, out);
            }
        }
    }
}

/// One check per distinct device path, plus an I2C scan for each I2C bus. Paths come from the
/// file as written and, for I2C, from the decoded devices (whose bus may be the default).
pub fn check_all(text: &str, devices: &[crate::adapters::DeviceConfig]) -> Vec<Check> {
    let mut seen = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (_, key, path) in paths(text) {
        seen.entry(path).or_default().push(format!("devices.{key}"));
    }
    for (bus, list) in crate::adapters::i2c::by_bus(devices) {
        let users = seen.entry(bus).or_default();
        for (id, _) in list {
            let key = format!("devices.{id}.i2c.bus");
            if !users.contains(&key) {
                users.push(key);
            }
        }
    }
    if seen.is_empty() {
        return vec![Check::pass("devices", "no device paths in the config")];
    }
    let mut out = Vec::new();
    for (path, users) in seen {
        out.push(check_path(Path::new(&path), &users.join(", ")));
        if is_i2c(&path) && out.last().is_some_and(|c| c.ok) {
            out.push(i2c_scan(Path::new(&path)));
        }
    }
    out
}

fn is_i2c(path: &str) -> bool {
    path.starts_with("/dev/i2c-")
}

fn group_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return "its group".into();
    };
    let gid = meta.gid();
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| {
            g.lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    f.next();
                    (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
                })
                .next()
        })
        .unwrap_or_else(|| format!("group {gid}"))
}

/// Exists, and opens read-write (without becoming our controlling terminal, without blocking).
pub fn check_path(path: &Path, used_by: &str) -> Check {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!("device {}", path.display());
    if !path.exists() {
        let fix = if is_i2c(&path.to_string_lossy()) {
            "enable I2C (sudo raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in \
             /boot/firmware/config.txt) and reboot; `ls /dev/i2c-*` lists the buses"
        } else if path.to_string_lossy().contains("ttyAMA")
            || path.to_string_lossy().contains("serial")
        {
            "enable the UART (sudo raspi-config nonint do_serial_hw 0) and disable the serial \
             console (sudo raspi-config nonint do_serial_cons 1), then reboot"
        } else {
            "check the cable and adapter; `ls /dev/serial/by-id/` shows USB serial adapters by \
             a name that survives reboots and replugging"
        };
        return Check::fail(name, format!("does not exist (used by {used_by})"), fix);
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(_) => Check::pass(
            name,
            format!("exists and opens read-write (used by {used_by})"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let group = group_of(path);
            Check::fail(
                name,
                format!("permission denied (used by {used_by})"),
                format!(
                    "the service gets {group} through SupplementaryGroups; to run by hand: \
                     sudo usermod -aG {group} $USER, then log in again"
                ),
            )
        }
        Err(e) => Check::fail(
            name,
            format!("cannot open: {e} (used by {used_by})"),
            "another program may hold the port (`sudo fuser -v PATH`), or the device is unplugged",
        ),
    }
}

/// The scan `edgegate sensors scan` does: addresses that answer, with our models for them.
fn i2c_scan(path: &Path) -> Check {
    use crate::adapters::i2c::{scan, worker};
    let bus = path.to_string_lossy();
    let name = format!("i2c scan {bus}");
    let mut i2c = match worker::open_linux(&bus) {
        Ok(i) => i,
        Err(e) => {
            return Check::fail(
                name,
                worker::open_error(&bus, &e),
                "see the device check above",
            )
        }
    };
    let found: Vec<String> = scan::probe(&mut i2c)
        .into_iter()
        .map(|a| {
            let models = scan::models_at(a);
            if models.is_empty() {
                format!("0x{a:02X}")
            } else {
                format!("0x{a:02X} ({})", models.join("/"))
            }
        })
        .collect();
    if found.is_empty() {
        Check::fail(
            name,
            "no device answered",
            "check power, SDA/SCL wiring and pull-ups; `edgegate sensors scan --bus BUS` repeats the scan",
        )
    } else {
        Check::pass(name, format!("devices at {}", found.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "site: s\ngateway: g\ndevices:\n  pump:\n    serial:\n      port: /dev/ttyUSB7\n      baud: 9600\n  air:\n    i2c:\n      bus: /dev/i2c-1\n      address: 0x44\n  null:\n    serial:\n      port: /dev/null\n  other:\n    sim:\n      kind: temperature\n";

    #[test]
    fn every_dev_path_under_devices_is_found_with_its_key() {
        assert_eq!(
            paths(SITE),
            vec![
                (
                    "pump".into(),
                    "pump.serial.port".into(),
                    "/dev/ttyUSB7".into()
                ),
                ("air".into(), "air.i2c.bus".into(), "/dev/i2c-1".into()),
                ("null".into(), "null.serial.port".into(), "/dev/null".into()),
            ]
        );
    }

    #[test]
    fn missing_paths_fail_with_a_fix_and_present_ones_pass() {
        let checks = check_all(SITE, &[]);
        let by = |p: &str| {
            checks
                .iter()
                .find(|c| c.name == format!("device {p}"))
                .unwrap()
        };
        let usb = by("/dev/ttyUSB7");
        assert!(
            !usb.ok && usb.detail.contains("devices.pump.serial.port"),
            "{usb:?}"
        );
        assert!(usb.fix.as_deref().unwrap().contains("/dev/serial/by-id"));
        let i2c = by("/dev/i2c-1");
        if !Path::new("/dev/i2c-1").exists() {
            assert!(i2c.fix.as_deref().unwrap().contains("do_i2c"), "{i2c:?}");
        }
        assert!(by("/dev/null").ok);
    }

    #[test]
    fn a_config_without_device_paths_passes() {
        let checks = check_all("site: s\ngateway: g\n", &[]);
        assert_eq!(checks.len(), 1);
        assert!(checks[0].ok);
    }
}

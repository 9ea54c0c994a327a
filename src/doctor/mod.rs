//! `edgegate doctor`: checks what the gateway needs from the machine it runs on, one plain
//! PASS/FAIL line each, with the fix under every failure.
//!
//! - devices: every `/dev/...` path in the devices' adapter sections (serial ports, I2C buses,
//!   whatever adapters are configured) exists and opens read-write; I2C buses are scanned
//! - the buffer directory is writable (a file is created, synced and removed)
//! - the uplink: DNS, TCP, TLS (when configured) and an MQTT CONNECT
//! - the clock is synchronised (the kernel's NTP state, as `timedatectl` reports it)

mod devices;
mod uplink;

use std::io::Write;
use std::path::Path;

use crate::site::Config;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check for the config at `path` (already loaded as `cfg`).
pub fn run(path: &Path, cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    match std::fs::read_to_string(path) {
        Ok(text) => out.extend(devices::check_all(&text, &cfg.devices)),
        Err(e) => out.push(Check::fail(
            "devices",
            format!("cannot read {}: {e}", path.display()),
            "run doctor as a user that can read the config",
        )),
    }
    out.push(data_dir(&cfg.buffer.dir));
    match &cfg.uplink {
        Some(up) => out.extend(uplink::check(up)),
        None => out.push(Check::pass("uplink", "none configured (local-only site)")),
    }
    out.push(clock());
    out
}

/// Prints the checks; returns true when all passed.
pub fn report(checks: &[Check], out: &mut dyn Write) -> bool {
    for c in checks {
        let mark = if c.ok { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "{mark}  {}: {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        let _ = writeln!(out, "all {} checks passed", checks.len());
    } else {
        let _ = writeln!(out, "{failed} of {} checks failed", checks.len());
    }
    failed == 0
}

fn data_dir(dir: &Path) -> Check {
    let name = "buffer directory";
    let probe = dir.join(format!(".edgegate-doctor-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"edgegate doctor\n")?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    });
    match result {
        Ok(()) => Check::pass(name, format!("{} is writable", dir.display())),
        Err(e) => Check::fail(
            name,
            format!("{} is not writable: {e}", dir.display()),
            format!(
                "under systemd the service's StateDirectory (/var/lib/edgegate) is made for it; \
                 otherwise create it for the gateway's user: sudo install -d -o $USER {}",
                dir.display()
            ),
        ),
    }
}

/// The kernel's view: adjtimex reports TIME_ERROR (and STA_UNSYNC) until an NTP client has
/// disciplined the clock, which is what `timedatectl`'s "System clock synchronized" shows.
fn clock() -> Check {
    let name = "clock";
    // SAFETY: adjtimex with modes = 0 only reads; the struct is plain data, zeroed.
    let (state, status) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut t);
        (state, t.status)
    };
    let unsync = state == libc::TIME_ERROR || status & libc::STA_UNSYNC != 0;
    if state < 0 {
        Check::fail(
            name,
            format!(
                "cannot read the clock state: {}",
                std::io::Error::last_os_error()
            ),
            "run doctor on the gateway itself, not in a container without adjtimex",
        )
    } else if unsync {
        Check::fail(
            name,
            "the system clock is not synchronised (readings would carry wrong times)",
            "enable time sync: sudo timedatectl set-ntp true, and let the gateway reach an NTP \
             server (UDP port 123); a Pi has no battery-backed clock",
        )
    } else {
        Check::pass(name, "the system clock is synchronised")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_check_tells_writable_from_not() {
        let dir = tempfile::tempdir().unwrap();
        let ok = data_dir(&dir.path().join("data"));
        assert!(ok.ok, "{ok:?}");
        assert!(
            std::fs::read_dir(dir.path().join("data"))
                .unwrap()
                .next()
                .is_none(),
            "probe removed"
        );
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let bad = data_dir(&file.join("data"));
        assert!(!bad.ok);
        assert!(bad.detail.contains("is not writable"), "{bad:?}");
        assert!(bad.fix.is_some());
    }

    #[test]
    fn report_prints_a_fix_under_each_failure_and_a_verdict() {
        let checks = vec![
            Check::pass("a", "fine"),
            Check::fail("b", "broken", "mend it"),
        ];
        let mut out = Vec::new();
        assert!(!report(&checks, &mut out));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "PASS  a: fine\nFAIL  b: broken\n      fix: mend it\n1 of 2 checks failed\n"
        );
    }
}

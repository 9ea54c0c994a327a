//! Real parts for integration tests: a Mosquitto broker, the edgegate binary, an MQTT subscriber.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

mod http;
mod mosquitto;
mod net;
mod outbox;
mod subscriber;

// Each test binary uses only some of these.
#[allow(unused_imports)]
pub use http::http_get;
#[allow(unused_imports)]
pub use mosquitto::Mosquitto;
#[allow(unused_imports)]
pub use net::{FreezableProxy, Pki};
#[allow(unused_imports)]
pub use outbox::outbox_rows;
#[allow(unused_imports)]
pub use subscriber::{Received, Subscriber};

pub const BIN: &str = env!("CARGO_BIN_EXE_edgegate");

/// True when the tests run under an emulator (see [`gateway_command`]): rates and sub-second
/// timings of a native run do not hold there.
pub fn emulated() -> bool {
    std::env::var("EDGEGATE_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty())
}

/// A command that runs the gateway binary. For a cross-built test run under qemu-user, where a
/// foreign binary cannot be exec'd directly, `EDGEGATE_TEST_RUNNER` (e.g.
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu`) is put in front of it.
pub fn gateway_command() -> Command {
    let runner = std::env::var("EDGEGATE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(BIN);
            c
        }
        None => Command::new(BIN),
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Polls `f` until it returns true or `timeout` passes; panics on timeout.
pub async fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, f).await,
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Polls `f` until it returns true (-> true) or `timeout` passes (-> false).
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !f() {
        if start.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

pub fn find_program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').chain(["/usr/sbin", "/usr/bin", "/sbin"]);
    for d in dirs {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` not found: install the Debian package `{package}` (the README's test command does)");
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {} failed", child.id());
}

/// The edgegate binary running `run` on a config written into its own directory.
pub struct Gateway {
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    runs: u32,
    /// While set, an emulated run's notify socket stays open and read, as systemd's is: a
    /// closed one makes each later notification (a reload's RELOADING=1, READY=1) a warning, and
    /// a full one (10 datagrams) would block the gateway's send.
    notify: Option<std::sync::Arc<()>>,
}

impl Gateway {
    pub fn new(dir: &Path, yaml: &str) -> Gateway {
        let config = dir.join("site.yaml");
        std::fs::write(&config, yaml).expect("write config");
        Gateway {
            dir: dir.to_path_buf(),
            config,
            child: None,
            runs: 0,
            notify: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "gateway already running");
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).expect("log file");
        let mut cmd = gateway_command();
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Emulated, startup takes a second or more instead of milliseconds: wait for READY (as
        // systemd would), so that the tests' timings start from a running gateway.
        let notify = emulated().then(|| {
            let path = self.dir.join(format!("notify-{}.sock", self.runs));
            let _ = std::fs::remove_file(&path);
            let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
            cmd.env("NOTIFY_SOCKET", &path);
            sock
        });
        self.child = Some(cmd.spawn().expect("start edgegate"));
        if let Some(sock) = notify {
            sock.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut buf = [0u8; 512];
            loop {
                let n = sock
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("no READY=1 from the gateway: {e}\n{}", self.log()));
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    break;
                }
            }
            let alive = std::sync::Arc::new(());
            let watch = std::sync::Arc::downgrade(&alive);
            self.notify = Some(alive);
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            std::thread::spawn(move || {
                while watch.upgrade().is_some() {
                    let _ = sock.recv(&mut buf);
                }
            });
        }
    }

    /// The running gateway's process id (under qemu-user: the emulator's).
    /// `kill -SIG` to the running gateway (`HUP` reloads its config).
    #[allow(dead_code)]
    pub fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("gateway running"), sig);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.join(format!("edgegate-{run}.log"))
    }

    /// What the current (or last) run has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs)).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "KILL");
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns the exit code and how long the gateway took to exit.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        let mut c = self.child.take().expect("gateway not running");
        let start = Instant::now();
        signal(&c, "TERM");
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return (status.code(), start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "gateway did not exit within 15 s of SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data").join("edgegate.db")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A test site: `temps` temperature and `levels` level sim devices at `interval_ms`.
pub fn site_yaml(
    local_port: u16,
    uplink_port: u16,
    temps: usize,
    levels: usize,
    interval_ms: u64,
) -> String {
    let mut y = format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{local_port}\nuplink:\n  host: 127.0.0.1\n  port: {uplink_port}\n  keepalive: 5s\n  reconnect_min: 100ms\n  reconnect_max: 500ms\nbuffer:\n  dir: data\n  commit_interval: 50ms\ndevices:\n"
    );
    for i in 1..=temps {
        y += &format!(
            "  temp-{i}:\n    sim:\n      kind: temperature\n      interval: {interval_ms}ms\n      mean: 4\n      amplitude: 2\n    points:\n      temperature:\n        unit: degC\n        valid_min: -30\n        valid_max: 50\n"
        );
    }
    for i in 1..=levels {
        y +=
            &format!("  tank-{i}:\n    sim:\n      kind: level\n      interval: {interval_ms}ms\n");
    }
    y
}
/// `yaml` (from [`site_yaml`]) with a failover broker on loopback `port` after the primary.
pub fn with_failover(yaml: &str, port: u16) -> String {
    yaml.replace(
        "  reconnect_max: 500ms\n",
        &format!("  reconnect_max: 500ms\n  failover: [\"127.0.0.1:{port}\"]\n"),
    )
}

/// Sequence numbers of every reading committed in the gateway's outbox file.
pub fn committed_seqs(db: &Path) -> BTreeSet<u64> {
    let conn = rusqlite::Connection::open(db).expect("open outbox");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(ok, "ok", "outbox database is damaged");
    drop(conn);
    outbox_rows(db)
        .into_iter()
        .filter_map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.payload).ok()?["seq"].as_u64()
        })
        .collect()
}

/// Loads `text` as `site.yaml` and checks that, for each of `expect`, some error line starts
/// with it (FILE:LINE:COL: path: message).
pub fn assert_config_errors(text: &str, expect: &[&str]) {
    let errs = edgegate::site::load_str(text, "site.yaml").unwrap_err();
    let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for want in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in\n{}",
            lines.join("\n")
        );
    }
}

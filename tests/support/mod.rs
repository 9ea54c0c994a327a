//! Real parts for integration tests: a Mosquitto broker, the edgegate binary, an MQTT subscriber.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

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

/// A Mosquitto broker on 127.0.0.1 with persistence, so that sessions and queued QoS 1 messages
/// survive its own restarts.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More config lines, e.g. a second listener.
    extra: String,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Mosquitto {
        Mosquitto::start_with(port, "")
    }

    /// With `extra` appended to the config (listeners after the first, TLS options...).
    pub fn start_with(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        // Started as root, Mosquitto drops to its own user; it must still be able to write its
        // persistence file and log here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod broker dir");
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
            extra: extra.to_string(),
        };
        m.restart();
        m
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mosquitto already running");
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nlog_dest file {}/mosquitto.log\n{}",
                self.port,
                self.dir.path().display(),
                self.dir.path().display(),
                self.extra
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(find_program("mosquitto", "mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like a crash: no persistence file is written, sessions and queues are gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "KILL");
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("mosquitto.db"));
    }

    /// SIGTERM and wait: Mosquitto saves its persistence file on the way out.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "TERM");
            let _ = c.wait();
            assert!(
                self.dir.path().join("mosquitto.db").exists(),
                "mosquitto saved no persistence file:\n{}",
                self.log()
            );
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
        }
    }

    /// The running gateway's process id (under qemu-user: the emulator's).
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

#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// The QoS it was delivered at: at most what the subscriber asked for and the sender used.
    pub qos: u8,
    pub at: std::time::SystemTime,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic, self.payload
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An MQTT subscriber that keeps everything it receives, reconnecting on its own. With
/// `persistent`, the broker queues QoS 1 messages for it while it is disconnected.
pub struct Subscriber {
    pub got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(port: u16, id: &str, filter: &str, persistent: bool) -> Subscriber {
        Self::start_at(port, id, filter, persistent, QoS::AtLeastOnce).await
    }

    pub async fn start_at(
        port: u16,
        id: &str,
        filter: &str,
        persistent: bool,
        qos: QoS,
    ) -> Subscriber {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 64);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(filter.clone(), qos).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            qos: p.qos as u8,
                            at: std::time::SystemTime::now(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("subscriber did not get SUBACK within 10 s")
            .expect("subscriber task ended");
        Subscriber { got, task }
    }

    pub fn snapshot(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Sequence numbers of readings received so far (status messages have none).
    pub fn seqs(&self) -> BTreeSet<u64> {
        self.snapshot()
            .iter()
            .filter(|m| !m.topic.ends_with("/status"))
            .filter_map(|m| m.json()["seq"].as_u64())
            .collect()
    }

    /// Per (device, replayed?), the first arrival of each seq, in arrival order. Live readings
    /// and replayed ones are two streams, each in order per device.
    pub fn first_arrivals_by_stream(&self) -> BTreeMap<(String, bool), Vec<u64>> {
        let mut seen = BTreeSet::new();
        let mut out: BTreeMap<(String, bool), Vec<u64>> = BTreeMap::new();
        for m in self.snapshot() {
            if m.topic.ends_with("/status") {
                continue;
            }
            let v = m.json();
            let Some(seq) = v["seq"].as_u64() else {
                continue;
            };
            let replay = v["replay"] == true;
            let device = m.topic.split('/').nth(2).unwrap_or_default().to_string();
            if seen.insert(seq) {
                out.entry((device, replay)).or_default().push(seq);
            }
        }
        out
    }

    /// Waits until every seq from 1 up to at least `target` has arrived. On timeout, returns the
    /// first 20 missing ones.
    pub async fn wait_gapless(&self, target: u64, timeout: Duration) -> Result<(), Vec<u64>> {
        let complete = |s: &BTreeSet<u64>| {
            s.last().is_some_and(|&m| m >= target)
                && s.first() == Some(&1)
                && s.len() as u64 == *s.last().unwrap()
        };
        if wait_until(timeout, || complete(&self.seqs())).await {
            return Ok(());
        }
        let s = self.seqs();
        let last = s.last().copied().unwrap_or(0).max(target);
        Err((1..=last).filter(|x| !s.contains(x)).take(20).collect())
    }

    /// Seqs that arrived marked as replayed.
    pub fn replayed(&self) -> BTreeSet<u64> {
        self.snapshot()
            .iter()
            .filter(|m| !m.topic.ends_with("/status"))
            .map(Received::json)
            .filter(|v| v["replay"] == true)
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sequence numbers of every reading committed in the gateway's outbox file.
pub fn committed_seqs(db: &Path) -> BTreeSet<u64> {
    let conn = rusqlite::Connection::open(db).expect("open outbox");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(ok, "ok", "outbox database is damaged");
    let mut stmt = conn.prepare("SELECT payload FROM outbox").expect("prepare");
    let rows = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .expect("query")
        .map(|p| p.expect("row"));
    rows.filter_map(|p| serde_json::from_slice::<serde_json::Value>(&p).ok()?["seq"].as_u64())
        .collect()
}

/// A loopback TCP proxy to `target` that can be frozen: it then stops forwarding in both
/// directions but keeps every connection open, like a link that died without a FIN or RST.
pub struct FreezableProxy {
    pub port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    pub async fn start(target: u16) -> FreezableProxy {
        Self::start_throttled(target, None).await
    }

    /// Like `start`, and what the client sends reaches the target at most at `bytes_per_sec`,
    /// like a slow cellular uplink (the way back is not limited).
    pub async fn start_throttled(target: u16, bytes_per_sec: Option<u64>) -> FreezableProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut r, mut w, rate) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                        bytes_per_sec,
                    ),
                    (Box::new(sr) as _, Box::new(cw) as _, None),
                ] {
                    let f = f.clone();
                    tokio::spawn(async move {
                        // Small reads when throttled, so the pace is smooth.
                        let mut buf = vec![0u8; if rate.is_some() { 512 } else { 16 * 1024 }];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if f.load(Ordering::Relaxed) {
                                // Frozen: swallow what was read and hold both sockets open, so
                                // neither end sees a FIN or RST; the test's runtime ends it.
                                let _hold = (&r, &w);
                                std::future::pending::<()>().await;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            if let Some(bps) = rate {
                                let pause = n as f64 / bps as f64;
                                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                            }
                        }
                    });
                }
            }
        });
        FreezableProxy { port, frozen, task }
    }

    pub fn freeze(&self) {
        self.frozen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A throwaway PKI made with the openssl command: a CA, a server certificate for 127.0.0.1, a
/// client certificate, and an unrelated CA that signed none of them. Files readable by all, so
/// Mosquitto can read them after dropping privileges.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let openssl = find_program("openssl", "openssl");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN={ca}"),
            );
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
            run(&a);
        }
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for who in ["server", "client"] {
            let (key, csr, pem, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=edgegate-test"]);
            run(&a);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let p = f.unwrap().path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// Mosquitto config lines for a TLS listener on `port`.
    pub fn listener(&self, port: u16, require_client_cert: bool) -> String {
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_client_cert}\n",
            self.path("ca.pem"),
            self.path("server.pem"),
            self.path("server.key")
        )
    }
}

//! The gateway binary under test with the environment systemd would give it, a notify socket
//! bound by the test, an HTTP scraper and a strict reader of the Prometheus text format.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub use crate::support::http_get;
use crate::support::{gateway_command, signal};

pub struct Gw {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Gw {
    pub fn new(yaml: &str) -> Gw {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("site.yaml");
        std::fs::write(&config, yaml).expect("write config");
        Gw {
            dir,
            config,
            child: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.path("edgegate.log")).expect("log file");
        let mut cmd = gateway_command();
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start edgegate"));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("edgegate.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("running"), sig);
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM, and the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        signal(&c, "TERM");
        let start = Instant::now();
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s.code();
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("gateway did not stop within 15 s\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A notify socket like systemd's: a Unix datagram socket the gateway sends its states to.
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket { sock, path }
    }

    /// The next datagram within `timeout`, as (arrival, text).
    pub fn recv(&self, timeout: Duration) -> Option<(Instant, String)> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .ok()?;
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some((
            Instant::now(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ))
    }

    /// Every datagram until `until`.
    pub fn collect_until(&self, until: Instant) -> Vec<(Instant, String)> {
        let mut out = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            if let Some(m) = self.recv(left) {
                out.push(m);
            }
        }
    }

    /// Waits for a datagram containing `line` (e.g. `READY=1`); panics after `timeout`.
    pub fn wait_for(&self, line: &str, timeout: Duration, gw: &Gw) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some((at, text)) if text.lines().any(|l| l == line) => return at,
                Some(_) => {}
                None => panic!("no {line} within {timeout:?}\n{}", gw.log()),
            }
        }
    }
}

/// Parses Prometheus text format 0.0.4 strictly: every sample belongs to a family declared by
/// `# TYPE` before it, names and labels are well formed, values are numbers, counters end in
/// `_total`, no series appears twice. Returns `name{labels}` -> value.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for (i, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            assert!(valid_name(name), "{at}: bad metric name");
            match kw {
                "HELP" => assert!(
                    parts.next().is_some_and(|h| !h.is_empty()),
                    "{at}: empty HELP"
                ),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{at}: bad type"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "{at}: TYPE twice"
                    );
                }
                _ => panic!("{at}: unknown comment"),
            }
            continue;
        }
        assert!(!line.is_empty(), "{at}: empty line");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("{at}: no value"));
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("{at}: value is not a number")),
        };
        let name = series.split('{').next().unwrap_or("");
        assert!(valid_name(name), "{at}: bad metric name");
        let t = types
            .get(name)
            .unwrap_or_else(|| panic!("{at}: sample before its # TYPE"));
        if t == "counter" {
            assert!(name.ends_with("_total"), "{at}: counter without _total");
            assert!(value >= 0.0, "{at}: negative counter");
        }
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{at}: bad label braces"));
            // key="value" pairs, values with \\ \" \n escapes only.
            let mut rest = inner;
            while !rest.is_empty() {
                let (key, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("{at}: bad label"));
                assert!(
                    valid_name(key) && !key.contains(':'),
                    "{at}: bad label name"
                );
                let mut chars = after.char_indices();
                let mut end = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => {
                            let e = chars.next().map(|x| x.1);
                            assert!(matches!(e, Some('\\' | '"' | 'n')), "{at}: bad escape");
                        }
                        '"' => {
                            end = Some(j);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("{at}: unterminated label value"));
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "{at}: series appears twice"
        );
    }
    out
}

/// The value of `series` (e.g. `edgegate_readings_total{device="a"}`), or panics with the text.
pub fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// Scrapes `/metrics` and parses it.
pub fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    parse_prometheus(&body)
}

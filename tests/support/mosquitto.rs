//! A real Mosquitto broker for the tests, started on a free loopback port.

use super::*;

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

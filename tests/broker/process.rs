//! The broker inside the real gateway binary: `edgegate passwd` lines in the config, memory under a
//! slow subscriber, `$SYS` counters.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use super::gw::{emulated, free_port, gateway_command, Gateway};
use super::support::*;

fn passwd(user: &str, password: &str) -> String {
    let mut child = gateway_command()
        .args(["passwd", "--iterations", "1000", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgegate passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "edgegate passwd failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn passwd_line_sets_up_a_user_of_the_real_gateway() {
    let line = passwd("plc", "s3cret");
    assert!(line.starts_with("plc: \"pbkdf2-sha256$1000$"), "{line}");
    // A bad user name is refused with exit code 2.
    let out = gateway_command()
        .args(["passwd", "a/b"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  auth:\n    anonymous: false\n    users:\n      {line}\nbuffer:\n  dir: data\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr = ([127, 0, 0, 1], port).into();
    let mut c = open_when_listening(addr).await;
    c.send(&connect_auth("x", None, None)).await;
    c.expect(&[0x20, 2, 0, 5]).await;
    let mut c = Client::open(addr).await;
    c.send(&connect_auth("x", Some("plc"), Some(b"S3cret")))
        .await;
    c.expect(&[0x20, 2, 0, 4]).await;
    let mut c = Client::open(addr).await;
    c.send(&connect_auth("x", Some("plc"), Some(b"s3cret")))
        .await;
    c.expect(&[0x20, 2, 0, 0]).await;
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

#[tokio::test]
async fn slow_subscriber_keeps_the_gateway_small_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  max_queued_messages: 1000\n  max_queued_bytes: 2MiB\n  sys_interval: 200ms\nbuffer:\n  dir: data\n"
    );
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr = ([127, 0, 0, 1], port).into();
    let mut probe = open_when_listening(addr).await;
    probe.send(&connect("probe", true, 0)).await;
    probe.expect(&[0x20, 2, 0, 0]).await;
    let pid = g.pid().unwrap();
    let before = peak_rss_kib(pid);

    // The slow subscriber: a small receive buffer, and it never reads.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = Client {
        stream: sock.connect(addr).await.unwrap(),
    };
    slow.send(&connect("slow", false, 0)).await;
    slow.expect(&[0x20, 2, 0, 0]).await;
    slow.subscribe(1, &[("flood/#", 1)]).await;

    // The fast publisher: QoS 1 (so the queue evicts the oldest), PUBACKs read and discarded.
    let payload = vec![0xa5u8; 8 * 1024];
    let count = if emulated() { 4_000 } else { 24_000 }; // 32 MB / 192 MB offered
    let mut publ = Client::open(addr).await;
    publ.send(&connect("fast", true, 0)).await;
    publ.expect(&[0x20, 2, 0, 0]).await;
    let (mut rd, mut wr) = publ.stream.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut acked = 0usize;
        while acked < count * 4 {
            match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => acked += n,
            }
        }
        acked / 4
    });
    let mut batch = Vec::with_capacity(32 * payload.len());
    for i in 0..count {
        let pid = (i % 65_535 + 1) as u16;
        batch.extend(publish(
            &format!("flood/{}", i % 8),
            &payload,
            1,
            pid,
            false,
            false,
        ));
        if batch.len() >= 16 * payload.len() {
            wr.write_all(&batch).await.unwrap();
            batch.clear();
        }
    }
    wr.write_all(&batch).await.unwrap();
    let acks = tokio::time::timeout(
        Duration::from_secs(if emulated() { 120 } else { 30 }),
        drain,
    )
    .await
    .expect("PUBACKs for the whole flood")
    .unwrap();
    assert_eq!(acks, count);

    let peak = peak_rss_kib(pid);
    // Queue bound 2 MiB + write buffer; the allocator keeps some. Unbounded it would be ~190 MB.
    let bound = if emulated() {
        before + 96 * 1024
    } else {
        before + 16 * 1024
    };
    assert!(
        peak < bound,
        "gateway peak RSS {peak} KiB (before the flood {before} KiB) exceeds {bound} KiB"
    );

    // Drops are counted, visible to any subscriber of $SYS.
    probe
        .subscribe(1, &[("$SYS/broker/messages/dropped", 0)])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (topic, value) = probe.read_publish().await;
        assert_eq!(topic, "$SYS/broker/messages/dropped");
        let dropped: u64 = String::from_utf8(value).unwrap().parse().unwrap();
        if dropped > 0 {
            assert!(dropped as usize <= count);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no drops counted");
    }
    drop(slow);
    let _ = std::io::stdout().flush();
}

#[test]
fn broker_example_passes_check() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/broker.yaml");
    let out = gateway_command()
        .args(["check", "--config", path])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

//! A QoS 1/2 publish from an on-site client that the forward rules take is acknowledged only
//! once the outbox has committed it; everything else is acknowledged at once.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use support::*;

/// A site with no sensors: what is in the outbox came from the test's clients. `farm/gw1/#` is
/// forwarded (the default rule), `plant/#` is not.
fn site(local: u16, upstream: u16, commit_interval: &str) -> String {
    format!(
        "site: farm\ngateway: gw1\nbroker:\n  listen: 127.0.0.1:{local}\nuplink:\n  host: 127.0.0.1\n  port: {upstream}\n  keepalive: 5s\n  reconnect_min: 100ms\n  reconnect_max: 500ms\nbuffer:\n  dir: data\n  commit_interval: {commit_interval}\n"
    )
}

fn wait() -> Duration {
    Duration::from_secs(if emulated() { 60 } else { 20 })
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn field(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

fn publish(topic: &str, payload: &[u8], qos: u8, pid: u16) -> Vec<u8> {
    let mut body = field(topic.as_bytes());
    if qos > 0 {
        body.extend(pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// A raw MQTT 3.1.1 client: CONNECT (clean session, keepalive 0) answered by CONNACK 0.
async fn client(port: u16, id: &str) -> TcpStream {
    let start = std::time::Instant::now();
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(e) if start.elapsed() > wait() => panic!("gateway broker not listening: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut body = field(b"MQTT");
    body.extend([4, 0x02, 0, 0]);
    body.extend(field(id.as_bytes()));
    s.write_all(&packet(0x10, &body)).await.unwrap();
    expect(&mut s, &[0x20, 2, 0, 0]).await;
    s
}

async fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    timeout(wait(), s.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("no {want:02x?} in time"))
        .unwrap();
    assert_eq!(got, want);
}

/// Topics of the rows committed in the outbox file.
fn outbox_topics(gw: &Gateway) -> Vec<String> {
    let conn = rusqlite::Connection::open(gw.db_path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT topic FROM outbox ORDER BY id")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_the_moment_it_acknowledged_the_gateway_still_forwards_after_restart() {
    let local = free_port();
    let upstream = free_port();
    let dir = tempfile::tempdir().unwrap();
    // Upstream is down. A long commit interval: an acknowledgement sent before the commit would
    // be followed by the kill well before the row reached the disk.
    let mut gw = Gateway::new(dir.path(), &site(local, upstream, "2s"));

    gw.start();
    let mut plc = client(local, "plc-1").await;
    plc.write_all(&publish("farm/gw1/plc/setpoint", b"q1", 1, 7))
        .await
        .unwrap();
    expect(&mut plc, &[0x40, 2, 0, 7]).await;
    gw.kill9();

    gw.start();
    let mut plc = client(local, "plc-1").await;
    plc.write_all(&publish("farm/gw1/plc/alarm", b"q2", 2, 8))
        .await
        .unwrap();
    expect(&mut plc, &[0x50, 2, 0, 8]).await;
    gw.kill9();
    assert_eq!(
        outbox_topics(&gw),
        ["farm/gw1/plc/setpoint", "farm/gw1/plc/alarm"]
    );

    let mosquitto = Mosquitto::start_on(upstream);
    let up = Subscriber::start(mosquitto.port, "ack-watch", "farm/gw1/plc/#", true).await;
    gw.start();
    wait_for("both messages upstream", wait(), || {
        up.snapshot().len() >= 2
    })
    .await;
    let got: Vec<(String, String)> = up
        .snapshot()
        .iter()
        .map(|r| (r.topic.clone(), r.text()))
        .collect();
    assert_eq!(
        got,
        [
            ("farm/gw1/plc/setpoint".into(), "q1".into()),
            ("farm/gw1/plc/alarm".into(), "q2".into())
        ]
    );
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_forwarded_qos_1_and_2_publishes_wait_for_the_commit() {
    let local = free_port();
    let dir = tempfile::tempdir().unwrap();
    // Upstream down, the longest commit interval: the one commit comes 10 s after the first row.
    let mut gw = Gateway::new(dir.path(), &site(local, free_port(), "10s"));
    gw.start();
    let mut plc = client(local, "plc-1").await;
    let mut hmi = client(local, "hmi-1").await;

    // The PLC's forwarded publish waits for the commit, and so does its next acknowledgement
    // (acknowledgements keep the order of the publishes).
    let mut both = publish("farm/gw1/plc/setpoint", b"21", 1, 1);
    both.extend(publish("plant/hmi/page", b"2", 1, 2));
    plc.write_all(&both).await.unwrap();

    // Meanwhile another client is not held up: QoS 0 to a forwarded topic, QoS 1 and 2 to one
    // that is not forwarded, each acknowledged (PINGRESP proves the QoS 0 was taken).
    let mut burst = publish("farm/gw1/hmi/button", b"0", 0, 0);
    burst.extend(packet(0xc0, &[]));
    burst.extend(publish("plant/hmi/page", b"1", 1, 3));
    burst.extend(publish("plant/hmi/page", b"2", 2, 4));
    hmi.write_all(&burst).await.unwrap();
    expect(&mut hmi, &[0xd0, 0, 0x40, 2, 0, 3, 0x50, 2, 0, 4]).await;

    // The PLC still waits: nothing committed, nothing acknowledged.
    assert!(outbox_topics(&gw).is_empty());
    let mut early = [0u8; 1];
    let pending = timeout(Duration::from_millis(300), plc.read(&mut early)).await;
    assert!(pending.is_err(), "PLC got {early:02x?} before the commit");

    // Its PINGREQ is answered at once, ahead of the held acknowledgements.
    plc.write_all(&packet(0xc0, &[])).await.unwrap();
    expect(&mut plc, &[0xd0, 0]).await;

    // Then the commit: both acknowledgements, in order, and the row is on disk by then.
    expect(&mut plc, &[0x40, 2, 0, 1, 0x40, 2, 0, 2]).await;
    let mut committed = outbox_topics(&gw);
    committed.sort();
    assert_eq!(committed, ["farm/gw1/hmi/button", "farm/gw1/plc/setpoint"]);
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_healthy_upstream_the_acknowledgement_follows_upstreams_not_the_disk() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "plc-watch", "farm/gw1/plc/#", true).await;
    let local = free_port();
    let dir = tempfile::tempdir().unwrap();
    // The longest commit interval: an acknowledgement within half of it came from upstream's.
    let mut gw = Gateway::new(dir.path(), &site(local, mosquitto.port, "10s"));
    gw.start();
    let mut plc = client(local, "plc-1").await;
    for (pid, qos) in [(1u16, 1u8), (2, 2), (3, 1)] {
        plc.write_all(&publish(
            "farm/gw1/plc/setpoint",
            &[b'0' + pid as u8],
            qos,
            pid,
        ))
        .await
        .unwrap();
    }
    // In the order of the publishes; PUBREC for the QoS 2 one, then its PUBREL and PUBCOMP.
    let want = [0x40, 2, 0, 1, 0x50, 2, 0, 2, 0x40, 2, 0, 3];
    let mut got = [0u8; 12];
    timeout(Duration::from_secs(5), plc.read_exact(&mut got))
        .await
        .expect("acknowledged only by the commit, 10 s later")
        .unwrap();
    assert_eq!(got, want);
    plc.write_all(&packet(0x62, &[0, 2])).await.unwrap();
    expect(&mut plc, &[0x70, 2, 0, 2]).await;
    wait_for("all three upstream", wait(), || up.snapshot().len() >= 3).await;
    assert!(
        outbox_topics(&gw).is_empty(),
        "written although acknowledged"
    );
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
    assert!(outbox_topics(&gw).is_empty(), "written at the stop");
}

/// A small tmpfs mounted over a directory for the length of a test.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs to fill a disk for real and must run as root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_the_acknowledgement_waits_until_the_row_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _fs = Tmpfs::mount(&data, "4m");
    let local = free_port();
    let mut gw = Gateway::new(dir.path(), &site(local, free_port(), "50ms"));
    gw.start();
    let mut plc = client(local, "plc-1").await;
    plc.write_all(&publish("farm/gw1/plc/a", b"1", 1, 1))
        .await
        .unwrap();
    expect(&mut plc, &[0x40, 2, 0, 1]).await;

    // Fill the disk to the last byte.
    let junk = data.join("junk");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&junk).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    // Larger than anything the WAL could still hold: this commit needs new disk space.
    let big = vec![b'x'; 200 * 1024];
    plc.write_all(&publish("farm/gw1/plc/b", &big, 1, 2))
        .await
        .unwrap();
    wait_for("the disk-full error in the log", wait(), || {
        gw.log().contains("cannot write buffer database")
    })
    .await;
    // The commit failed, so no PUBACK: the next thing the PLC hears answers its PINGREQ.
    plc.write_all(&packet(0xc0, &[])).await.unwrap();
    expect(&mut plc, &[0xd0, 0]).await;

    std::fs::remove_file(&junk).unwrap();
    expect(&mut plc, &[0x40, 2, 0, 2]).await;
    // The acknowledgement fires with its own batch, the log line once nothing is left held.
    wait_for("the writable-again log line", wait(), || {
        gw.log().contains("writable again")
    })
    .await;
    assert_eq!(outbox_topics(&gw), ["farm/gw1/plc/a", "farm/gw1/plc/b"]);
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

/// CONNECT, MQTT 3.1.1, persistent session, keepalive 0.
fn connect_persistent(id: &str) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.extend([4, 0x00, 0, 0]);
    body.extend(field(id.as_bytes()));
    packet(0x10, &body)
}

#[tokio::test]
async fn a_message_the_durable_subscriber_lost_is_not_acknowledged_and_its_resend_is_taken() {
    use edgegate::bus::Bus;
    let cfg = edgegate::bus::BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sys_interval: Duration::ZERO,
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let mut durable = bus.subscribe_durable(&["up/#".into()], 16).unwrap();
    let port = bus.local_addr().port();
    let open = || async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&connect_persistent("plc-2")).await.unwrap();
        s
    };

    let mut plc = open().await;
    expect(&mut plc, &[0x20, 2, 0, 0]).await;
    plc.write_all(&publish("up/a", b"x", 2, 5)).await.unwrap();
    let (msg, done) = timeout(wait(), durable.recv()).await.unwrap().unwrap();
    assert_eq!((msg.topic.as_str(), msg.qos), ("up/a", 2));
    // The subscriber gives up on it: no PUBREC, the connection is closed.
    drop(done.expect("a QoS 2 publish from a client comes with a completion"));
    let mut rest = Vec::new();
    timeout(wait(), plc.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, [] as [u8; 0], "acknowledged a message that was lost");

    // The client sends it again (DUP): routed again, not taken for a duplicate, and this time
    // acknowledged once the subscriber has made it durable.
    let mut plc = open().await;
    expect(&mut plc, &[0x20, 2, 1, 0]).await;
    let mut again = publish("up/a", b"x", 2, 5);
    again[0] |= 0x08;
    plc.write_all(&again).await.unwrap();
    let (msg, done) = timeout(wait(), durable.recv()).await.unwrap().unwrap();
    assert_eq!(msg.payload.as_ref(), b"x");
    done.unwrap().send(()).unwrap();
    expect(&mut plc, &[0x50, 2, 0, 5]).await;

    // In-process publishes come without a completion.
    bus.publish(edgegate::bus::Message {
        topic: "up/b".into(),
        payload: bytes::Bytes::from_static(b"y"),
        qos: 1,
        retain: false,
        props: None,
        origin: None,
    })
    .await;
    let (msg, done) = timeout(wait(), durable.recv()).await.unwrap().unwrap();
    assert_eq!((msg.topic.as_str(), done.is_none()), ("up/b", true));
    shutdown.cancel();
}

//! Write-behind as a site sees it: with a healthy upstream the readings never reach the card;
//! with an upstream that never answers, every one of them does.

use std::time::Duration;

use crate::support::*;

/// The value of a counter in the gateway's `/metrics`.
fn counter(health: u16, name: &str) -> u64 {
    let (status, body) = http_get(health, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}")) as u64
}

/// 3 sensors at 20 readings/s each, commits at most every 2 s (far longer than a loopback
/// acknowledgement takes, even emulated), `/metrics` on `health`.
fn yaml(uplink: u16, health: u16) -> String {
    site_yaml(free_port(), uplink, 2, 1, 50).replace(
        "  commit_interval: 50ms\n",
        &format!("  commit_interval: 2s\nhealth:\n  listen: 127.0.0.1:{health}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_healthy_upstream_no_reading_is_written_to_the_database() {
    let mosquitto = Mosquitto::start();
    let up = Subscriber::start(mosquitto.port, "wb-watch", "farm/gw1/#", false).await;
    let dir = tempfile::tempdir().unwrap();
    let health = free_port();
    let mut gw = Gateway::new(dir.path(), &yaml(mosquitto.port, health));
    gw.start();
    wait_for("readings upstream", Duration::from_secs(30), || {
        up.seqs().len() >= 50
    })
    .await;
    let written = counter(health, "edgegate_outbox_written_total");
    let spared = counter(health, "edgegate_outbox_acked_before_write_total");
    let seen = up.seqs().len();
    wait_for("300 more readings", Duration::from_secs(60), || {
        up.seqs().len() >= seen + 300
    })
    .await;
    let delivered = (up.seqs().len() - seen) as u64;
    // Several commit intervals went by: whatever was still unacknowledged at one was written.
    assert_eq!(
        counter(health, "edgegate_outbox_written_total"),
        written,
        "readings written while upstream acknowledged them at once"
    );
    // The gateway counts an acknowledgement a moment after the subscriber has the message.
    let mut now_spared = 0;
    wait_for("acknowledgements counted", Duration::from_secs(10), || {
        now_spared = counter(health, "edgegate_outbox_acked_before_write_total") - spared;
        now_spared >= delivered
    })
    .await;
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
    assert!(committed_seqs(&gw.db_path()).is_empty(), "rows left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_upstream_that_never_answers_every_reading_is_written() {
    // Takes the connection and says nothing: no CONNACK, no acknowledgement, ever.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        hole.set_nonblocking(true).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < until && conns.len() < 50 {
            match hole.accept() {
                Ok((c, _)) => conns.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let health = free_port();
    let mut gw = Gateway::new(dir.path(), &yaml(port, health));
    gw.start();
    wait_for("readings written", Duration::from_secs(30), || {
        gw.db_path().exists() && committed_seqs(&gw.db_path()).len() >= 200
    })
    .await;
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
    // The clean stop wrote the last batch: every reading made is in the file, and the run's
    // counters (kept with each commit) say none was spared.
    let (_, text, _) = crate::buffer("stats", &gw);
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(
        text.contains(&format!("written:  {rows} messages")),
        "{rows} messages in the file\n{text}"
    );
    assert!(text.contains("; 0 acknowledged before"), "{text}");
    drop(held);
}

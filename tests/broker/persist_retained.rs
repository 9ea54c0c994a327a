//! The retained copies of the gateway's own readings are coalesced on disk
//! (`buffer.retained_flush`): written once per flush for the topics that changed and at a clean
//! stop, so a crash finds them at most one flush old; a client's retained message is on disk with
//! its commit, as before. The real gateway binary, SIGTERM and kill -9, its SQLite file.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::gw::{free_port, Gateway};
use super::persist::{connect_as, nothing_more};
use super::support::*;

const SENSORS: [&str; 3] = [
    "s/g/t1/temperature",
    "s/g/t2/temperature",
    "s/g/t3/temperature",
];

/// A site with the three sensors of [`SENSORS`] read every 100 ms, or none, and an uplink that
/// nobody answers, so every reading stays in the buffer's outbox.
fn site(port: u16, flush: &str, devices: bool) -> String {
    let upstream = free_port();
    let mut y = format!(
        "site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\n  sys_interval: 0s\nuplink:\n  host: 127.0.0.1\n  port: {upstream}\n  reconnect_min: 100ms\n  reconnect_max: 500ms\nbuffer:\n  dir: data\n  commit_interval: 50ms\n  retained_flush: {flush}\n"
    );
    if devices {
        y += "devices:\n";
        for d in ["t1", "t2", "t3"] {
            y += &format!("  {d}:\n    sim: {{kind: temperature, interval: 100ms}}\n");
        }
    }
    y
}

fn seq(payload: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("reading JSON");
    v["seq"].as_u64().expect("seq")
}

/// The seqs of each sensor's readings committed in the outbox, oldest first.
fn committed(g: &Gateway) -> BTreeMap<String, Vec<u64>> {
    let rows = crate::gw::outbox_rows(&g.db_path());
    let mut by_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in rows {
        if SENSORS.contains(&r.topic.as_str()) {
            by_topic.entry(r.topic).or_default().push(seq(&r.payload));
        }
    }
    by_topic
}

/// Waits until a live subscriber has seen `n` more readings of every sensor.
async fn readings(addr: SocketAddr, n: usize) {
    let mut live = connect_as(addr, "live", true, false).await;
    live.subscribe(1, &[("s/g/+/temperature", 0)]).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while SENSORS
        .iter()
        .any(|s| seen.get(*s).copied().unwrap_or(0) < n)
    {
        let (topic, _) = live.read_publish().await;
        *seen.entry(topic).or_default() += 1;
    }
}

/// What a fresh subscriber gets retained for each sensor: the seq of its reading.
async fn retained(addr: SocketAddr) -> BTreeMap<String, u64> {
    let mut late = connect_as(addr, "late", true, false).await;
    late.subscribe(1, &[("s/g/+/temperature", 0)]).await;
    let mut got = BTreeMap::new();
    // Sorted by topic, and no sensor runs: after the three, nothing more comes.
    for _ in SENSORS {
        let (topic, payload) = late.read_publish().await;
        got.insert(topic, seq(&payload));
    }
    nothing_more(&mut late).await;
    got
}

/// Counts every write SQLite makes to a retained sensor value in the state table from now on.
fn count_writes(g: &Gateway) {
    let conn = rusqlite::Connection::open(g.db_path()).unwrap();
    conn.execute_batch(
        "CREATE TABLE writes (key TEXT);
         CREATE TRIGGER writes_ins AFTER INSERT ON state WHEN new.ns = 'bus.retained'
           BEGIN INSERT INTO writes VALUES (new.key); END;
         CREATE TRIGGER writes_upd AFTER UPDATE ON state WHEN new.ns = 'bus.retained'
           BEGIN INSERT INTO writes VALUES (new.key); END;",
    )
    .unwrap();
}

fn writes(g: &Gateway) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(g.db_path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT key, count(*) FROM writes WHERE key LIKE '%/temperature' GROUP BY key")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// With a flush longer than the runs: a sensor's value is written once, at SIGTERM, however many
/// readings it had, and that is its latest one; a kill -9 later finds that value, older than
/// every reading of the crashed run (which were not written: that is the coalescing).
#[tokio::test]
async fn own_readings_are_written_at_a_clean_stop_and_not_with_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut g = Gateway::new(dir.path(), &site(port, "60s", false));
    g.start();
    connect_as(addr, "up", true, false).await; // the database exists
    assert_eq!(g.terminate().0, Some(0), "{}", g.log());
    count_writes(&g);

    std::fs::write(&g.config, site(port, "60s", true)).unwrap();
    g.start();
    readings(addr, 15).await;
    assert_eq!(g.terminate().0, Some(0), "{}", g.log());
    let first_run = committed(&g);
    for s in SENSORS {
        assert!(first_run[s].len() >= 15, "{s}: {:?}", first_run[s]);
    }
    let once: BTreeMap<String, i64> = SENSORS.iter().map(|s| (s.to_string(), 1)).collect();
    assert_eq!(writes(&g), once, "writes per sensor over 15+ readings");

    // A second run crashes before its first flush.
    g.start();
    readings(addr, 15).await;
    g.kill9();
    let both_runs = committed(&g);
    std::fs::write(&g.config, site(port, "60s", false)).unwrap();
    g.start();
    let got = retained(addr).await;
    for s in SENSORS {
        let latest_of_first = *first_run[s].last().unwrap();
        assert_eq!(
            got[s], latest_of_first,
            "{s}: the value the clean stop wrote"
        );
        let newer = both_runs[s].iter().filter(|q| **q > got[s]).count();
        assert!(newer >= 10, "{s}: {newer} newer readings committed");
    }
    assert_eq!(writes(&g), once, "the crashed run wrote none");
    assert_eq!(g.terminate().0, Some(0), "{}", g.log());
}

/// With `retained_flush: 1s`, a kill -9 finds each sensor's value from the crashed run, at most
/// one flush (10 readings) older than its latest committed reading; margin for a busy machine.
#[tokio::test]
async fn after_a_kill9_own_readings_are_at_most_one_flush_old() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut g = Gateway::new(dir.path(), &site(port, "1s", true));
    g.start();
    // 3.5 s of readings: three flushes at least.
    readings(addr, 35).await;
    g.kill9();
    let run = committed(&g);
    std::fs::write(&g.config, site(port, "1s", false)).unwrap();
    g.start();
    let got = retained(addr).await;
    for s in SENSORS {
        assert!(run[s].contains(&got[s]), "{s}: {} not of this run", got[s]);
        let newer = run[s].iter().filter(|q| **q > got[s]).count();
        // 10 readings per flush, one commit, and as much again for scheduling delays.
        assert!(newer <= 20, "{s}: {newer} committed readings newer");
    }
}

/// A retained message from a network client is on disk by its PUBACK (its topic is forwarded,
/// so the PUBACK waits for the commit), however long the flush of the gateway's own readings.
#[tokio::test]
async fn a_clients_retained_message_is_on_disk_at_its_puback() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut g = Gateway::new(dir.path(), &site(port, "60s", false));
    g.start();
    let mut plc = connect_as(addr, "plc", true, false).await;
    plc.send(&publish("s/g/plc/setpoint", b"21.5", 1, 7, true, false))
        .await;
    plc.expect(&puback(7)).await;
    g.kill9();
    g.start();
    let mut late = connect_as(addr, "late", true, false).await;
    late.subscribe(1, &[("s/g/plc/#", 0)]).await;
    late.expect(b"\x31\x16\x00\x10s/g/plc/setpoint21.5").await;
    nothing_more(&mut late).await;
}

//! Small rows: a reading the outbox has to write keeps its fields, and is sent with exactly the
//! payload it came with; what clients publish is written whole; files of earlier versions keep
//! working.

use super::*;
use crate::reading::payload::{Alarm, Sample};
use crate::reading::Quality;
use proptest::prelude::*;
use std::time::Duration;

/// A reading as forward hands it over: payload rendered from its sample.
fn reading(device: &str, sample: Sample) -> Outgoing {
    Outgoing {
        topic: format!("farm/gw1/{device}/temperature"),
        payload: Bytes::from(sample.to_json().unwrap()),
        qos: 1,
        retain: false,
        class: if sample.alarm.is_some() {
            Class::Alarm
        } else {
            Class::Telemetry
        },
        device: device.to_string(),
        sample: Some(sample),
    }
}

fn sample(value: f64, seq: u64) -> Sample {
    Sample {
        value,
        unit: Some("degC".into()),
        ts_ms: db::now_ms() - 3,
        quality: Quality::Good,
        seq,
        alarm: None,
    }
}

fn client_message() -> Outgoing {
    Outgoing {
        topic: "farm/gw1/plc/setpoint".into(),
        payload: Bytes::from_static(b"{\"value\":21.5,\"seq\":99}"),
        qos: 2,
        retain: false,
        class: Class::Telemetry,
        device: "plc-1".into(),
        sample: None,
    }
}

/// Commits only when told to (`flush`) or at close.
fn open_slow(dir: &Path, caps: Caps) -> Store {
    Store::open(dir, Duration::from_secs(3600), caps).unwrap()
}

/// (topic, payload, device, class, qos) of every committed row, oldest first.
async fn committed(store: &Store) -> Vec<(String, Vec<u8>, String, Class, u8)> {
    store
        .fetch_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.topic, r.payload, r.device, r.class, r.qos))
        .collect()
}

fn handed(msgs: &[Outgoing]) -> Vec<(String, Vec<u8>, String, Class, u8)> {
    msgs.iter()
        .map(|m| {
            let m = m.clone();
            (m.topic, m.payload.to_vec(), m.device, m.class, m.qos)
        })
        .collect()
}

/// How each row is stored: (topic as written, topic id set).
fn stored(dir: &Path) -> Vec<(String, bool)> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let mut stmt = conn
        .prepare("SELECT topic, topic_id IS NOT NULL FROM outbox ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap());
    rows.collect()
}

#[tokio::test]
async fn a_written_reading_is_small_and_sent_with_the_payload_it_came_with() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_slow(dir.path(), Caps::NONE);
    let msgs = vec![
        reading("cold-1", sample(3.25, 7)),
        reading(
            "cold-1",
            Sample {
                alarm: Some(Alarm::High),
                quality: Quality::OutOfRange,
                ..sample(12.5, 8)
            },
        ),
        reading(
            "tank-2",
            Sample {
                unit: None,
                ..sample(-0.0, 9)
            },
        ),
        client_message(),
    ];
    for m in &msgs {
        store.enqueue(m.clone()).await.unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(committed(&store).await, handed(&msgs));
    let bytes: u64 = msgs
        .iter()
        .map(|m| (m.topic.len() + m.payload.len()) as u64)
        .sum();
    assert_eq!(
        store.stats().await.unwrap().bytes,
        bytes,
        "caps count the messages"
    );
    assert_eq!(
        stored(dir.path()),
        vec![
            (String::new(), true),
            (String::new(), true),
            (String::new(), true),
            ("farm/gw1/plc/setpoint".into(), false)
        ],
        "readings are stored as fields, a client's message whole"
    );
    store.close().await;
    // A new run knows the interned topics, and reuses them.
    let store = open_slow(dir.path(), Caps::NONE);
    assert_eq!(committed(&store).await, handed(&msgs));
    let more = reading("cold-1", sample(3.5, 10));
    store.enqueue(more.clone()).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(committed(&store).await.last(), handed(&[more]).last());
    store.close().await;
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let topics: i64 = conn
        .query_row("SELECT COUNT(*) FROM topics", [], |r| r.get(0))
        .unwrap();
    assert_eq!(topics, 2, "one per (topic, device, unit)");
    // `buffer export` shows the payloads too.
    let mut out = Vec::new();
    assert_eq!(inspect::export(dir.path(), &mut out).unwrap(), 5);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#"\"alarm\":\"high\""#),
        "an export line shows the rendered payload: {text}"
    );
}

#[tokio::test]
async fn caps_count_a_small_rows_drops_under_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let caps = Caps {
        max_rows: 2,
        held: 0,
        ..Caps::NONE
    };
    let store = open_slow(dir.path(), caps);
    for seq in 1..=5 {
        store
            .enqueue(reading("cold-1", sample(f64::from(seq as u32), seq)))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let drops = store.stats().await.unwrap().drops;
    assert_eq!(drops, vec![("max_rows".into(), "cold-1".into(), 3)]);
    let left = committed(&store).await;
    assert_eq!(left.len(), 2);
    assert!(String::from_utf8_lossy(&left[0].1).contains("\"seq\":4"));
    store.close().await;
}

fn quality() -> impl Strategy<Value = Quality> {
    prop_oneof![
        Just(Quality::Good),
        Just(Quality::OutOfRange),
        Just(Quality::Stale),
        Just(Quality::ClockUnsynced)
    ]
}

fn alarm() -> impl Strategy<Value = Option<Alarm>> {
    prop_oneof![
        Just(None),
        Just(Some(Alarm::Clear)),
        Just(Some(Alarm::Low)),
        Just(Some(Alarm::High))
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("a number", |v| v.is_finite()),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        (-100_000i64..100_000).prop_map(|v| v as f64 / 100.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE / 2.0),
    ]
}

fn any_sample() -> impl Strategy<Value = Sample> {
    (
        value(),
        proptest::option::of("[a-zA-Z%/°µ]{0,6}"),
        // Anything from 1970 on, and sensor clocks ahead of the gateway's.
        0i64..4_000_000_000_000,
        quality(),
        0u64..u64::MAX / 2,
        alarm(),
    )
        .prop_map(|(value, unit, ts_ms, quality, seq, alarm)| Sample {
            value,
            unit,
            ts_ms,
            quality,
            seq,
            alarm,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_reading_comes_back_byte_for_byte(samples in proptest::collection::vec(any_sample(), 1..20)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open_slow(dir.path(), Caps::NONE);
            let msgs: Vec<Outgoing> = samples
                .into_iter()
                .enumerate()
                .map(|(i, s)| reading(&format!("d{}", i % 3), s))
                .collect();
            for m in &msgs {
                store.enqueue(m.clone()).await.unwrap();
            }
            store.flush().await.unwrap();
            assert!(stored(dir.path()).iter().all(|(_, small)| *small));
            assert_eq!(committed(&store).await, handed(&msgs));
            store.close().await;
        });
    }
}

/// A copy of the buffer the release before small rows wrote (tests/fixtures/outbox-v4).
fn v4_buffer() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/outbox-v4");
    std::fs::copy(fixture.join(DB_FILE), dir.path().join(DB_FILE)).unwrap();
    dir
}

fn export(dir: &Path) -> String {
    let mut out = Vec::new();
    inspect::export(dir, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_buffer_of_the_previous_release_is_migrated_and_sent_as_it_was() {
    let dir = v4_buffer();
    let want = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/outbox-v4/export.jsonl"
    ));
    let store = open_slow(dir.path(), Caps::NONE);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    assert_eq!(export(dir.path()), want, "every old row, byte for byte");
    let old = store.fetch_after(0, 1000).await.unwrap();
    assert_eq!(old.len(), 83);
    // That run reserved ids and seqs up to 65,536: this one goes on after them.
    let seq = store.next_seq();
    assert!(seq > 65_536, "seq {seq} would repeat one of the old run's");
    store
        .enqueue(reading("coldroom-1", sample(3.5, seq)))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let rows = store.fetch_after(0, 1000).await.unwrap();
    assert_eq!(rows.len(), 84);
    assert!(rows[83].id > 65_536);
    assert_eq!(stored(dir.path()).last(), Some(&(String::new(), true)));
    // The old rows go as they were, and then are acknowledged like any other.
    store
        .ack_many(old.iter().map(|r| r.id).collect())
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(committed(&store).await.len(), 1);
    store.close().await;
    drop(conn);
}

#[test]
fn a_buffer_from_a_newer_release_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 9).unwrap();
    drop(conn);
    let err = Store::open(dir.path(), Duration::from_millis(200), Caps::NONE)
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("schema version is 9, from a newer edgegate")
            && text.contains("move the file"),
        "{text}"
    );
}

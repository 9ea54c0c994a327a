use super::*;
use std::time::UNIX_EPOCH;

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn reading(device: &str, value: f64, ms: u64) -> Reading {
    Reading {
        device: device.into(),
        quantity: "temperature".into(),
        value,
        unit: Some("degC"),
        ts: at(ms),
        quality: Quality::Good,
    }
}

fn json(n: &Normalized) -> serde_json::Value {
    serde_json::from_slice(&n.payload).unwrap()
}

fn counter() -> impl FnMut() -> u64 {
    let mut s = 0;
    move || {
        s += 1;
        s
    }
}

const T: &str = "{site}/{gateway}/{device}/{quantity}";

#[test]
fn payload_has_value_unit_ts_quality_seq_in_order() {
    let mut n = Normalizer::with_points("farm", "gw1", T, []);
    // 2026-11-22T10:00:00.123Z
    let out = n
        .process(&reading("tank1", 21.53, 1_795_341_600_123), || 1842)
        .unwrap();
    assert_eq!(out.topic, "farm/gw1/tank1/temperature");
    assert_eq!(
        std::str::from_utf8(&out.payload).unwrap(),
        r#"{"value":21.53,"unit":"degC","ts":"2026-11-22T10:00:00.123Z","quality":"good","seq":1842}"#
    );
    assert_eq!(out.seq, 1842);
}

#[test]
fn scale_offset_unit_and_decimals_apply() {
    let p = PointConfig {
        unit: Some("degF".into()),
        scale: 1.8,
        offset: 32.0,
        decimals: Some(1),
        ..PointConfig::default()
    };
    let mut n = Normalizer::with_points("s", "g", T, [("d", "temperature", p)]);
    let out = n.process(&reading("d", 21.53, 0), || 1).unwrap();
    let v = json(&out);
    assert_eq!(v["value"], 70.8);
    assert_eq!(v["unit"], "degF");
}

#[test]
fn scaling_artefacts_are_rounded_away() {
    let p = PointConfig {
        scale: 0.1,
        ..PointConfig::default()
    };
    let mut n = Normalizer::with_points("s", "g", T, [("d", "temperature", p)]);
    let out = n.process(&reading("d", 3.0, 0), || 1).unwrap();
    assert!(std::str::from_utf8(&out.payload)
        .unwrap()
        .contains(r#""value":0.3,"#));
}

#[test]
fn outside_valid_range_is_out_of_range_quality() {
    let p = PointConfig {
        valid_min: Some(-40.0),
        valid_max: Some(85.0),
        ..PointConfig::default()
    };
    let mut n = Normalizer::with_points("s", "g", T, [("d", "temperature", p)]);
    let mut seq = counter();
    assert_eq!(
        json(&n.process(&reading("d", 85.0, 0), &mut seq).unwrap())["quality"],
        "good"
    );
    assert_eq!(
        json(&n.process(&reading("d", 85.5, 1), &mut seq).unwrap())["quality"],
        "out_of_range"
    );
    assert_eq!(
        json(&n.process(&reading("d", -41.0, 2), &mut seq).unwrap())["quality"],
        "out_of_range"
    );
}

#[test]
fn deadband_holds_small_moves_until_heartbeat_and_seq_has_no_gaps() {
    let p = PointConfig {
        deadband: 0.5,
        heartbeat: Some(Duration::from_secs(60)),
        ..PointConfig::default()
    };
    let mut n = Normalizer::with_points("s", "g", T, [("d", "temperature", p)]);
    let mut seq = counter();
    let first = n.process(&reading("d", 20.0, 0), &mut seq).unwrap();
    assert_eq!(first.seq, 1);
    assert!(n.process(&reading("d", 20.4, 1_000), &mut seq).is_none());
    assert!(n.process(&reading("d", 19.6, 2_000), &mut seq).is_none());
    let moved = n.process(&reading("d", 20.5, 3_000), &mut seq).unwrap();
    assert_eq!(
        moved.seq, 2,
        "held-back readings must not consume sequence numbers"
    );
    assert!(n.process(&reading("d", 20.5, 62_999), &mut seq).is_none());
    let hb = n.process(&reading("d", 20.5, 63_000), &mut seq).unwrap();
    assert_eq!(hb.seq, 3);
}

#[test]
fn quality_change_passes_the_deadband() {
    let p = PointConfig {
        deadband: 10.0,
        valid_max: Some(50.0),
        ..PointConfig::default()
    };
    let mut n = Normalizer::with_points("s", "g", T, [("d", "temperature", p)]);
    let mut seq = counter();
    n.process(&reading("d", 45.0, 0), &mut seq).unwrap();
    let out = n.process(&reading("d", 51.0, 1), &mut seq).unwrap();
    assert_eq!(json(&out)["quality"], "out_of_range");
}

#[test]
fn not_a_number_is_skipped() {
    let mut n = Normalizer::with_points("s", "g", T, []);
    assert!(n.process(&reading("d", f64::NAN, 0), || 1).is_none());
    assert!(n.process(&reading("d", f64::INFINITY, 0), || 1).is_none());
}

#[test]
fn unconfigured_points_use_the_adapter_unit_and_template() {
    let mut n = Normalizer::with_points("s", "g", "plant/{device}.{quantity}", []);
    let out = n.process(&reading("pump", 1.0, 0), || 7).unwrap();
    assert_eq!(out.topic, "plant/pump.temperature");
    assert_eq!(json(&out)["unit"], "degC");
}

#[test]
fn threshold_crossings_are_marked_once_each_way_and_pass_the_deadband() {
    let p = PointConfig {
        alarm_low: Some(0.0),
        alarm_high: Some(8.0),
        deadband: 100.0,
        ..PointConfig::default()
    };
    let mut n = Normalizer::with_points("s", "g", T, [("d", "temperature", p)]);
    let mut seq = counter();
    let first = json(&n.process(&reading("d", 4.0, 0), &mut seq).unwrap());
    assert!(first.get("alarm").is_none(), "{first}");
    let high = json(&n.process(&reading("d", 8.5, 1), &mut seq).unwrap());
    assert_eq!(high["alarm"], "high");
    assert!(
        n.process(&reading("d", 9.0, 2), &mut seq).is_none(),
        "still high: deadband holds"
    );
    let clear = json(&n.process(&reading("d", 7.0, 3), &mut seq).unwrap());
    assert_eq!(clear["alarm"], "clear");
    let low = json(&n.process(&reading("d", -0.5, 4), &mut seq).unwrap());
    assert_eq!(low["alarm"], "low");
}

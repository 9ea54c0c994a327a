use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::adapters::sim::{Signal, SimConfig};
use crate::config::units::{ms, secs};
use crate::normalize::PointConfig;
use crate::uplink::Route;

/// Every error of `text`, displayed as `site.yaml:LINE:COL: message`.
fn errors(text: &str) -> Vec<String> {
    match load_str(text, "site.yaml") {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

fn ok(text: &str) -> Config {
    match load_str(text, "site.yaml") {
        Ok(c) => c,
        Err(errs) => panic!("unexpected errors: {errs:#?}"),
    }
}

const MINIMAL: &str = "site: s1\ngateway: g1\n";

#[test]
fn full_config_decodes_with_defaults_and_expansion() {
    let text = r#"
site: tankfarm
gateway: gw01
topics:
  reading: "plant/{site}/{gateway}/{device}/{quantity}"
broker:
  listen: "[::1]:1884"
  max_packet_size: 1MiB
uplink:
  host: cloud.example.com
  port: 8883
  username: user
  password: secret
  keepalive: 1m
  qos: 2
  forward: ["{site}/{gateway}/#", "cmd/+/x"]
  reconnect_min: 500ms
  reconnect_max: 2m
  failover: ["backup.example.com:8884", "10.0.0.2", "[::1]:1885"]
  live_max_delay: 250ms
buffer:
  commit_interval: 50ms
  retained_flush: 5s
  max_bytes: 64MiB
  max_age: 7d
devices:
  coldroom-1:
    sim:
      kind: temperature
      mean: 4
      amplitude: 1.5
    points:
      temperature:
        unit: degC
        scale: 1.0
        offset: -0.5
        valid_min: -40
        valid_max: 85
        alarm_high: 8
        deadband: 0.05
        heartbeat: 60s
        decimals: 2
  tank_a:
    sim: {kind: level, interval: 250ms, min: 5, max: 95, fill_time: 1h, drain_time: 2h}
"#;
    let c = ok(text);
    let want = Config {
        site: "tankfarm".into(),
        gateway: "gw01".into(),
        topics: Topics {
            reading: "plant/{site}/{gateway}/{device}/{quantity}".into(),
            status: "{site}/{gateway}/status".into(),
            device_status: "{site}/{gateway}/{device}/status".into(),
        },
        broker: BrokerConfig {
            listen: "[::1]:1884".parse().unwrap(),
            max_connections: 1000,
            max_packet_size: 1 << 20,
            max_queued_messages: 1000,
            ..BrokerConfig::default()
        },
        uplink: Some(UplinkConfig {
            host: "cloud.example.com".into(),
            port: 8883,
            client_id: "tankfarm-gw01".into(),
            username: Some("user".into()),
            password: Some("secret".into()),
            keepalive: secs(60),
            qos: 2,
            forward: vec![
                Route {
                    filter: "tankfarm/gw01/#".into(),
                    qos: 2,
                },
                Route {
                    filter: "cmd/+/x".into(),
                    qos: 2,
                },
            ],
            reconnect_min: ms(500),
            reconnect_max: secs(120),
            max_inflight: 100,
            failover: vec![
                ("backup.example.com".into(), 8884),
                ("10.0.0.2".into(), 1883),
                ("::1".into(), 1885),
            ],
            tls: None,
            replay_rate: 0,
            live_max_delay: ms(250),
        }),
        buffer: BufferConfig {
            dir: PathBuf::from("data"),
            commit_interval: ms(50),
            retained_flush: secs(5),
            max_bytes: 64 * 1024 * 1024,
            max_rows: 5_000_000,
            max_age: Some(secs(7 * 86_400)),
        },
        health: None,
        mqttsn: None,
        devices: vec![
            DeviceConfig {
                id: "coldroom-1".into(),
                adapter: AdapterConfig::Sim(SimConfig {
                    interval: secs(1),
                    signal: Signal::Temperature {
                        mean: 4.0,
                        amplitude: 1.5,
                        noise: 0.1,
                        period: secs(86_400),
                    },
                }),
                points: BTreeMap::from([(
                    "temperature".to_string(),
                    PointConfig {
                        unit: Some("degC".into()),
                        scale: 1.0,
                        offset: -0.5,
                        valid_min: Some(-40.0),
                        valid_max: Some(85.0),
                        alarm_low: None,
                        alarm_high: Some(8.0),
                        deadband: 0.05,
                        heartbeat: Some(secs(60)),
                        decimals: Some(2),
                    },
                )]),
            },
            DeviceConfig {
                id: "tank_a".into(),
                adapter: AdapterConfig::Sim(SimConfig {
                    interval: ms(250),
                    signal: Signal::Level {
                        min: 5.0,
                        max: 95.0,
                        fill_time: secs(3600),
                        drain_time: secs(7200),
                        noise: 0.2,
                    },
                }),
                points: BTreeMap::new(),
            },
        ],
        digest: c.digest.clone(),
    };
    assert_eq!(c.digest.len(), 16);
    assert_eq!(c, want);
}

#[test]
fn minimal_config_gets_every_default() {
    let c = ok(MINIMAL);
    assert_eq!(c.topics.reading, "{site}/{gateway}/{device}/{quantity}");
    assert_eq!(c.broker.listen, "0.0.0.0:1883".parse().unwrap());
    assert_eq!(c.broker.max_packet_size, 256 * 1024);
    assert_eq!(c.broker.max_connections, 1000);
    assert_eq!(c.broker.max_queued_messages, 1000);
    assert_eq!(c.uplink, None);
    assert_eq!(c.buffer.dir, PathBuf::from("data"));
    assert_eq!(c.buffer.commit_interval, ms(200));
    assert_eq!(c.buffer.retained_flush, secs(60));
    assert!(c.devices.is_empty());
    assert!(ok(&format!("{MINIMAL}devices: {{}}\n")).devices.is_empty());
    assert!(ok(&format!("{MINIMAL}devices:\n")).devices.is_empty());

    let c = ok(&format!("{MINIMAL}uplink:\n  host: h\n"));
    let u = c.uplink.unwrap();
    assert_eq!((u.port, u.qos, u.max_inflight), (1883, 1, 100));
    assert_eq!(u.client_id, "s1-g1");
    assert_eq!(
        u.forward,
        vec![Route {
            filter: "s1/g1/#".into(),
            qos: 1
        }]
    );
    assert_eq!(
        (u.keepalive, u.reconnect_min, u.reconnect_max),
        (secs(30), secs(1), secs(60))
    );
    assert_eq!((u.username, u.password), (None, None));

    let c = ok(&format!(
        "{MINIMAL}devices:\n  t:\n    sim: {{kind: level}}\n"
    ));
    let want = AdapterConfig::Sim(SimConfig {
        interval: secs(1),
        signal: Signal::Level {
            min: 10.0,
            max: 90.0,
            fill_time: secs(600),
            drain_time: secs(600),
            noise: 0.2,
        },
    });
    assert_eq!(c.devices[0].adapter, want);
}

#[test]
fn misspelled_duplicate_and_bad_duration_are_all_reported_in_line_order() {
    let text = "\
site: demo
gateway: gw01
buffer:
  dir: data
  commit_interval: fast
  dir: other
brokr:
  listen: 127.0.0.1:1883
";
    let errs = load_str(text, "site.yaml").unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 3, "{shown:#?}");
    assert_eq!((errs[0].line, errs[0].col), (5, 20));
    assert!(
        errs[0]
            .message
            .starts_with("buffer.commit_interval: invalid duration `fast`"),
        "{}",
        errs[0]
    );
    assert_eq!(
        shown[1],
        "site.yaml:6:3: buffer: duplicate key `dir` (first at line 4)"
    );
    assert_eq!(
        shown[2],
        "site.yaml:7:1: unknown key `brokr`; did you mean `broker`?"
    );
}

/// `buffer.retained_flush`: 0 writes with every commit; beyond an hour, or not a duration, is
/// reported where it is written.
#[test]
fn retained_flush_is_a_duration_of_at_most_an_hour() {
    let c = ok(&format!("{MINIMAL}buffer:\n  retained_flush: 0s\n"));
    assert_eq!(c.buffer.retained_flush, Duration::ZERO);
    let c = ok(&format!("{MINIMAL}buffer:\n  retained_flush: 1h\n"));
    assert_eq!(c.buffer.retained_flush, secs(3600));
    let errs = errors(&format!(
        "{MINIMAL}buffer:\n  retained_flush: 2h\n  commit_interval: 50ms\n"
    ));
    assert_eq!(
        errs,
        vec!["site.yaml:4:19: buffer.retained_flush: must be at most 1h, got 2h"]
    );
    let errs = errors(&format!("{MINIMAL}buffer:\n  retained_flush: 60\n"));
    assert_eq!(
        errs,
        vec!["site.yaml:4:19: buffer.retained_flush: duration `60` has no unit; write e.g. `60s` or `60ms` (units: d, h, m, s, ms)"]
    );
}

#[test]
fn unknown_key_without_a_near_miss_lists_the_valid_keys() {
    let errs = errors(&format!("{MINIMAL}buffer:\n  colour: red\n"));
    assert_eq!(
        errs,
        vec!["site.yaml:4:3: buffer: unknown key `colour` (valid keys: dir, commit_interval, retained_flush, max_bytes, max_rows, max_age)"]
    );
}

#[test]
fn missing_required_keys_point_at_the_parent_key() {
    let errs = errors("topics: {}\nuplink:\n  port: 1\n");
    assert_eq!(
        errs,
        vec![
            "site.yaml:1:1: missing required key `site`",
            "site.yaml:1:1: missing required key `gateway`",
            "site.yaml:2:1: uplink: missing required key `host`",
        ]
    );
    // An empty file has no site either.
    assert_eq!(errors("").len(), 2);
    assert_eq!(errors("# nothing yet\n").len(), 2);
}

#[test]
fn errors_are_sorted_by_position_whatever_order_they_are_found_in() {
    // Unknown keys are found last (when a section is finished) but sort by line.
    let text = "colour: red\nsite: s\ngateway: g\nbuffer: {commit_interval: x, depth: 3}\n";
    let errs = load_str(text, "site.yaml").unwrap_err();
    let lines: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(lines, vec![(1, 1), (4, 27), (4, 30)]);
    assert!(
        errs[0].message.starts_with("unknown key `colour`"),
        "{}",
        errs[0]
    );
}

#[test]
fn nulls_aliases_and_duplicate_devices() {
    // `uplink:` with nothing under it asks for an uplink without a host.
    let errs = errors(&format!("{MINIMAL}uplink:\n"));
    assert_eq!(
        errs,
        vec!["site.yaml:3:1: uplink: missing required key `host`"]
    );
    // reconnect_min above the default reconnect_max is blamed on reconnect_min.
    let errs = errors(&format!(
        "{MINIMAL}uplink:\n  host: h\n  reconnect_min: 2m\n"
    ));
    assert_eq!(
            errs,
            vec!["site.yaml:5:18: uplink.reconnect_min: must be at most reconnect_max (1m, the default), got 2m"]
        );
    // Anchors and aliases work; a device id given twice is a duplicate key.
    let text = format!(
            "{MINIMAL}devices:\n  a: &tank {{sim: {{kind: level}}}}\n  b: *tank\n  a: {{sim: {{kind: temperature}}}}\n"
        );
    let errs = errors(&text);
    assert_eq!(
        errs,
        vec!["site.yaml:6:3: devices: duplicate key `a` (first at line 4)"]
    );
    let c = ok(&format!(
        "{MINIMAL}devices:\n  a: &tank {{sim: {{kind: level}}}}\n  b: *tank\n"
    ));
    let ids: Vec<&str> = c.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(c.devices[0].adapter, c.devices[1].adapter);
}

#[test]
fn wrong_types_are_reported_at_the_value() {
    let text = "\
site: [a, b]
gateway: gw01
broker:
  max_connections: many
  listen: localhost:1883
  max_queued_messages: \"10\"
uplink: yes
buffer:
  commit_interval: 5
devices:
  d1: 5
  d2:
    sim: [kind, level]
";
    let errs = errors(text);
    assert_eq!(
            errs,
            vec![
                "site.yaml:1:7: site: expected a string, found a list",
                "site.yaml:4:20: broker.max_connections: expected an integer, found `many`",
                "site.yaml:5:11: broker.listen: `localhost:1883` is not an IP address with a port; e.g. 0.0.0.0:1883, 127.0.0.1:1883, \"[::1]:1883\"",
                "site.yaml:6:24: broker.max_queued_messages: expected an integer, found the string \"10\" (remove the quotes)",
                "site.yaml:7:9: uplink: expected a mapping, found `yes`",
                "site.yaml:9:20: buffer.commit_interval: duration `5` has no unit; write e.g. `5s` or `5ms` (units: d, h, m, s, ms)",
                "site.yaml:11:7: devices.d1: expected a mapping, found `5`",
                "site.yaml:13:10: devices.d2.sim: expected a mapping, found a list",
            ]
        );
}

#[test]
fn out_of_range_values_are_reported() {
    let text = "\
site: s
gateway: g
broker:
  max_connections: 0
  max_packet_size: 32
uplink:
  host: h
  port: 70000
  qos: 3
  keepalive: 1500ms
  reconnect_min: 5s
  reconnect_max: 2s
  max_inflight: 0
buffer:
  commit_interval: 11s
devices:
  t1:
    sim: {kind: temperature, interval: 5ms, amplitude: -1, period: 500ms}
  l1:
    sim: {kind: level, min: 80, max: 20, fill_time: 0s}
    points:
      level: {scale: 0, valid_min: 10, valid_max: 5, decimals: 12, deadband: -1, heartbeat: 10ms}
  l2:
    sim: {kind: level, min: 95}
";
    let errs = errors(text);
    let want = [
            "site.yaml:4:20: broker.max_connections: must be between 1 and 100000, got 0",
            "site.yaml:5:20: broker.max_packet_size: must be between 64 B and 256MiB, got 32 B",
            "site.yaml:8:9: uplink.port: must be between 1 and 65535, got 70000",
            "site.yaml:9:8: uplink.qos: must be between 1 and 2, got 3",
            "site.yaml:10:14: uplink.keepalive: must be whole seconds, got 1s500ms",
            "site.yaml:12:18: uplink.reconnect_max: must be at least reconnect_min (5s), got 2s",
            "site.yaml:13:17: uplink.max_inflight: must be between 1 and 65535, got 0",
            "site.yaml:15:20: buffer.commit_interval: must be between 1ms and 10s, got 11s",
            "site.yaml:18:40: devices.t1.sim.interval: must be between 10ms and 1d, got 5ms",
            "site.yaml:18:56: devices.t1.sim.amplitude: must be at least 0, got -1",
            "site.yaml:18:68: devices.t1.sim.period: must be at least 1s, got 500ms",
            "site.yaml:20:38: devices.l1.sim.max: must be greater than min (80), got 20",
            "site.yaml:20:53: devices.l1.sim.fill_time: must be at least 1s, got 0s",
            "site.yaml:22:22: devices.l1.points.level.scale: must not be 0",
            "site.yaml:22:51: devices.l1.points.level.valid_max: must be greater than valid_min (10), got 5",
            "site.yaml:22:64: devices.l1.points.level.decimals: must be between 0 and 9, got 12",
            "site.yaml:22:78: devices.l1.points.level.deadband: must be at least 0, got -1",
            "site.yaml:22:93: devices.l1.points.level.heartbeat: must be at least 1s, got 10ms",
            "site.yaml:24:29: devices.l2.sim.min: must be less than max (90, the default), got 95",
        ];
    assert_eq!(errs, want);
}

#[test]
fn yaml_syntax_error_is_one_error_at_its_position() {
    let text = "site: s\ngateway: g\nbroker:\n  listen: [::1]:1883\n  max_connections: 5\n";
    let errs = load_str(text, "site.yaml").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].col), (4, 16));
    assert!(
        errs[0].message.starts_with("YAML syntax error: "),
        "{}",
        errs[0]
    );

    let errs = load_str("site: s\n  gateway: g\n", "x.yaml").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].col), (2, 10));
}

#[test]
fn load_names_the_file_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.yaml");
    std::fs::write(&path, "site: s\ngateway: g\nbrokr: {}\n").unwrap();
    let errs = load(&path).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        format!(
            "{}:3:1: unknown key `brokr`; did you mean `broker`?",
            path.display()
        )
    );

    let missing = dir.path().join("missing.yaml");
    let errs = load(&missing).unwrap_err();
    assert_eq!(errs[0].file, missing.display().to_string());
    assert!(
        errs[0].message.starts_with("cannot read config file: "),
        "{}",
        errs[0]
    );

    std::fs::write(&path, b"site: s\ngateway: \xff\n").unwrap();
    let errs = load(&path).unwrap_err();
    assert_eq!((errs[0].line, errs[0].col), (2, 10));
    assert_eq!(errs[0].message, "the file is not valid UTF-8");

    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(load(&path).unwrap().site, "s1");
}

#[test]
fn garbage_never_panics() {
    let inputs = [
        "",
        "-",
        "5",
        "[]",
        "~",
        "site:",
        "site: {a: }",
        "devices: [a]",
        "devices:\n  d:\n    sim: {kind: level, min: ~}",
        "devices:\n  d:\n    sim: ~\n    points: [1]",
        "uplink: {host: h, forward: ~, client_id: ~, password: ~}",
        "uplink: {host: [h], forward: [[]], keepalive: [], reconnect_min: {}}",
        "site: &a s\ngateway: *a\ndevices: {x: &d {sim: {kind: level}}, y: *d}",
        "? a\n? b\n",
        "\u{feff}site: s",
        "\0",
        "site: \"\\u0000\"",
        "broker: {max_packet_size: 99999999999999999999999TiB}",
        "uplink: {host: h, port: -99999999999999999999999999999999999999999999}",
    ];
    for text in inputs {
        let _ = load_str(text, "x.yaml");
    }
    // Every prefix of a real config, too.
    let demo = DEMO_FOR_PREFIXES;
    for end in (0..demo.len()).filter(|i| demo.is_char_boundary(*i)) {
        let _ = load_str(&demo[..end], "x.yaml");
    }
}

const DEMO_FOR_PREFIXES: &str = "site: s\ngateway: g\nuplink:\n  host: h\n  forward: [\"{site}/#\"]\ndevices:\n  d:\n    sim: {kind: level}\n    points:\n      level: {unit: \"%\"}\n";

#[test]
fn demo_config_loads() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.yaml"));
    let c = match load(path) {
        Ok(c) => c,
        Err(errs) => panic!(
            "{}",
            errs.iter()
                .map(|e| e.to_string() + "\n")
                .collect::<String>()
        ),
    };
    assert_eq!((c.site.as_str(), c.gateway.as_str()), ("demo", "gw01"));
    assert_eq!(c.broker.listen, "127.0.0.1:1883".parse().unwrap());
    let u = c.uplink.as_ref().expect("demo has an uplink");
    assert_eq!(
        (u.host.as_str(), u.port, u.password.as_deref()),
        ("127.0.0.1", 1884, None)
    );
    assert_eq!(c.buffer.dir, PathBuf::from("data"));
    let count = |want: &str| {
        c.devices
            .iter()
            .filter(|d| d.adapter.quantities().iter().any(|(q, _)| *q == want))
            .count()
    };
    assert!(count("temperature") >= 3);
    assert!(count("level") >= 2);
    assert!(c.devices.iter().any(|d| !d.points.is_empty()));
}

mod devices;
mod topics;
mod uplink;

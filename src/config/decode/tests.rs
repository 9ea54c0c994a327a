use super::super::yaml;
use super::*;

fn with_root(text: &str, f: impl FnOnce(&mut MapReader)) -> Vec<String> {
    let doc = yaml::parse(text).unwrap();
    let root = doc.root.unwrap();
    let mut errs = Errors::new();
    {
        let mut m = MapReader::new(&root, "", Pos::new(1, 1), &mut errs).unwrap();
        f(&mut m);
    }
    errs.into_config_errors("t.yaml")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn closest_suggests_only_near_misses() {
    let keys = ["broker", "uplink", "site", "qos"];
    assert_eq!(closest("brokr", keys.iter().copied()), Some("broker"));
    assert_eq!(closest("Uplink", keys.iter().copied()), Some("uplink"));
    assert_eq!(closest("qs", keys.iter().copied()), Some("qos"));
    assert_eq!(closest("zzzzzz", keys.iter().copied()), None);
    assert_eq!(closest("ab", keys.iter().copied()), None);
}

#[test]
fn getters_convert_and_report() {
    let text =
        "a: 5\nb: \"5\"\nc: 1.5\nd: 2m\ne: x\nf: 1KiB\ng: true\nh: [1, x]\ni: 0x10\nj: nan\n";
    let errs = with_root(text, |m| {
        assert_eq!(m.int("a", 0..=10u8), Some(5));
        assert_eq!(m.int("b", 0..=10u8), None);
        assert_eq!(m.int("c", 0..=10u8), None);
        assert_eq!(m.float("c", 0.0..=f64::INFINITY), Some(1.5));
        assert_eq!(m.float("a", 0.0..=f64::INFINITY), Some(5.0));
        assert_eq!(
            m.duration("d", Duration::ZERO..=Duration::MAX),
            Some(Duration::from_secs(120))
        );
        assert_eq!(m.duration("e", Duration::ZERO..=Duration::MAX), None);
        assert_eq!(m.size("f", 0..=u64::MAX), Some(1024));
        assert_eq!(m.bool("g"), Some(true));
        assert_eq!(m.strings("h").map(|v| v.len()), Some(2));
        assert_eq!(m.int("i", 0..=100i64), Some(16));
        assert_eq!(m.float("j", f64::NEG_INFINITY..=f64::INFINITY), None);
        assert_eq!(m.string("zz"), None);
    });
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert_eq!(
        errs[0],
        "t.yaml:2:4: b: expected an integer, found the string \"5\" (remove the quotes)"
    );
    assert_eq!(errs[1], "t.yaml:3:4: c: expected an integer, found `1.5`");
    assert!(
        errs[2].starts_with("t.yaml:5:4: e: invalid duration `x`"),
        "{}",
        errs[2]
    );
    assert_eq!(errs[3], "t.yaml:10:4: j: expected a number, found `nan`");
}

#[test]
fn ranges_and_missing_and_unknown_keys() {
    let text = "port: 70000\nlow: -1\nsize: 1GiB\nt: 5ms\nsub:\n  portt: 1\n  other: 2\n";
    let errs = with_root(text, |m| {
        assert_eq!(m.int("port", 1..=65535u16), None);
        assert_eq!(m.float("low", 0.0..=f64::INFINITY), None);
        assert_eq!(m.size("size", 64..=256 << 20), None);
        assert_eq!(
            m.duration("t", Duration::from_secs(1)..=Duration::MAX),
            None
        );
        m.require(&["site"]);
        let mut sub = m.map("sub").unwrap();
        sub.require(&["host"]);
        sub.int("port", 0..=1u8);
    });
    assert_eq!(
        errs,
        vec![
            "t.yaml:1:1: missing required key `site`",
            "t.yaml:1:7: port: must be between 1 and 65535, got 70000",
            "t.yaml:2:6: low: must be at least 0, got -1",
            "t.yaml:3:7: size: must be between 64 B and 256MiB, got 1GiB",
            "t.yaml:4:4: t: must be at least 1s, got 5ms",
            "t.yaml:5:1: sub: missing required key `host`",
            "t.yaml:6:3: sub: unknown key `portt`; did you mean `port`?",
            "t.yaml:7:3: sub: unknown key `other` (valid keys: host, port)",
        ]
    );
}

#[test]
fn wrong_shapes_are_type_errors() {
    let text = "a: [1]\nb: {x: 1}\nc: 5\nd: [x, [y], ~]\n";
    let errs = with_root(text, |m| {
        assert_eq!(m.string("a"), None);
        assert_eq!(m.int("b", 0..=1u8), None);
        assert!(m.map("c").is_none());
        assert!(m.strings("d").is_none());
    });
    assert_eq!(
        errs,
        vec![
            "t.yaml:1:4: a: expected a string, found a list",
            "t.yaml:2:4: b: expected an integer, found a mapping",
            "t.yaml:3:4: c: expected a mapping, found `5`",
            "t.yaml:4:8: d[1]: expected a string, found a list",
            "t.yaml:4:13: d[2]: expected a string, found nothing",
        ]
    );
}

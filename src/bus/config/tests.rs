use crate::bus::QueueDrop;
use crate::site::load_str;

const HASH: &str =
    "pbkdf2-sha256$1$73616c74$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";

fn errors(text: &str) -> Vec<String> {
    match load_str(text, "site.yaml") {
        Ok(c) => panic!("expected errors, got {:#?}", c.broker),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn broker_limits_auth_and_acl_decode() {
    let text = format!(
        r##"site: s
gateway: g
broker:
  max_queued_bytes: 256KiB
  queue_drop: newest
  max_inflight: 8
  sys_interval: 0s
  auth:
    anonymous: false
    users:
      plc: "{HASH}"
    acl:
      - publish: ["dev/%c/up"]
      - user: plc
        publish: ["#"]
        subscribe: ["#", "$SYS/#"]
"##
    );
    let c = load_str(&text, "site.yaml").unwrap();
    let b = c.broker;
    assert_eq!(b.max_queued_bytes, 256 << 10);
    assert_eq!(b.queue_drop, QueueDrop::Newest);
    assert_eq!(b.max_inflight, 8);
    assert!(b.sys_interval.is_zero());
    assert!(!b.auth.anonymous);
    assert!(b.auth.users["plc"].verify(b"passwd"));
    let acl = b.auth.acl.unwrap();
    assert_eq!(acl.len(), 2);
    assert_eq!(acl[0].user, None);
    assert_eq!(acl[0].publish, ["dev/%c/up"]);
    assert!(acl[0].subscribe.is_empty());
    assert_eq!(acl[1].user.as_deref(), Some("plc"));

    // Defaults: anonymous, no ACL, $SYS every 10 s.
    let d = load_str("site: s\ngateway: g\n", "site.yaml")
        .unwrap()
        .broker;
    assert!(d.auth.anonymous && d.auth.users.is_empty() && d.auth.acl.is_none());
    assert_eq!(d.sys_interval, std::time::Duration::from_secs(10));
    assert_eq!(d.queue_drop, QueueDrop::Oldest);
}

#[test]
fn max_session_expiry_decodes_and_is_checked() {
    let c = load_str(
        "site: s\ngateway: g\nbroker:\n  max_session_expiry: 2h\n",
        "site.yaml",
    )
    .unwrap();
    assert_eq!(
        c.broker.max_session_expiry,
        Some(std::time::Duration::from_secs(7200))
    );
    let d = load_str("site: s\ngateway: g\n", "site.yaml").unwrap();
    assert_eq!(d.broker.max_session_expiry, None);
    let errs = errors("site: s\ngateway: g\nbroker:\n  max_session_expiry: 0s\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("site.yaml:4:23: broker.max_session_expiry"),
        "{errs:#?}"
    );
}

#[test]
fn broker_auth_errors_point_at_the_value() {
    let text = r##"site: s
gateway: g
broker:
  queue_drop: oldest-first
  auth:
    anonymous: false
    users:
      plc: plaintext
    acl:
      - user: nobody
        publish: ["a/#/b"]
      - subscribe: "x"
      - {}
"##;
    let errs = errors(text);
    let want = [
        "site.yaml:4:15: broker.queue_drop: `oldest-first` is not one of: oldest, newest",
        "site.yaml:8:12: broker.auth.users.plc: `plaintext` is not a password hash; expected pbkdf2-sha256$ITERATIONS$SALT$HASH as printed by `edgegate passwd`",
        "site.yaml:11:19: broker.auth.acl[0].publish: `a/#/b` is not a valid topic filter",
        "site.yaml:12:20: broker.auth.acl[1].subscribe: expected a list, found",
        "site.yaml:13:9: broker.auth.acl[2].publish: a rule needs `publish` or `subscribe` patterns",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
}

#[test]
fn rules_for_unknown_users_and_anonymous_without_users_are_errors() {
    let text = r##"site: s
gateway: g
broker:
  auth:
    anonymous: false
    acl:
      - user: plc
        publish: ["#"]
"##;
    let errs = errors(text);
    assert!(
        errs.iter().any(|e| e.starts_with("site.yaml:5:16: broker.auth.anonymous: with `anonymous: false` no client could connect")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with(
            "site.yaml:7:15: broker.auth.acl[0].user: `plc` is not in `broker.auth.users`"
        )),
        "{errs:#?}"
    );
}

#[test]
fn broker_mqtt5_limits_decode_and_are_checked() {
    let c = load_str(
        "site: s\ngateway: g\nbroker:\n  receive_maximum: 10\n  topic_alias_max: 0\n  max_keepalive: 2m\n",
        "site.yaml",
    )
    .unwrap();
    assert_eq!(
        (c.broker.receive_maximum, c.broker.topic_alias_max),
        (10, 0)
    );
    assert_eq!(c.broker.max_keepalive, 120);
    // Defaults: 64 in flight toward us, 16 aliases, no keepalive cap.
    let d = load_str("site: s\ngateway: g\n", "site.yaml")
        .unwrap()
        .broker;
    assert_eq!(
        (d.receive_maximum, d.topic_alias_max, d.max_keepalive),
        (64, 16, 0)
    );
    let errs = errors(
        "site: s\ngateway: g\nbroker:\n  receive_maximum: 0\n  topic_alias_max: 70000\n  max_keepalive: 30h\n",
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("site.yaml:4:20: broker.receive_maximum"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("site.yaml:5:20: broker.topic_alias_max"),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("site.yaml:6:18: broker.max_keepalive"),
        "{errs:#?}"
    );
}

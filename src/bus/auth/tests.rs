use super::*;

fn config(anonymous: bool, acl: Option<Vec<AclRule>>) -> AuthConfig {
    let mut users = HashMap::new();
    users.insert("plc".to_string(), PasswordHash::new("s3cret", 10).unwrap());
    AuthConfig {
        anonymous,
        users,
        acl,
    }
}

fn rule(user: Option<&str>, publish: &[&str], subscribe: &[&str]) -> AclRule {
    AclRule {
        user: user.map(Into::into),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn hash_line_round_trip_and_verify() {
    let h = PasswordHash::new("pw", 1000).unwrap();
    let line = h.to_line();
    assert!(line.starts_with("pbkdf2-sha256$1000$"), "{line}");
    let parsed = PasswordHash::parse(&line).unwrap();
    assert_eq!(parsed, h);
    assert!(parsed.verify(b"pw"));
    assert!(!parsed.verify(b"pw "));
    assert!(!parsed.verify(b""));
    // Two hashes of the same password differ by their salt.
    assert_ne!(PasswordHash::new("pw", 1000).unwrap().salt, h.salt);
}

#[test]
fn known_vector() {
    // RFC 7914 section 11 (PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1), first 32 bytes.
    let line =
        "pbkdf2-sha256$1$73616c74$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";
    let h = PasswordHash::parse(line).unwrap();
    assert!(h.verify(b"passwd"));
}

#[test]
fn bad_hash_lines() {
    for bad in [
        "",
        "plain",
        "pbkdf2-sha256$0$00$00",
        "pbkdf2-sha512$1$00$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc",
        "pbkdf2-sha256$x$00$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc",
        "pbkdf2-sha256$1$$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc",
        "pbkdf2-sha256$1$0g$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc",
        "pbkdf2-sha256$1$00$55ac",
        "pbkdf2-sha256$1$00$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc$",
    ] {
        let err = PasswordHash::parse(bad).unwrap_err();
        assert!(err.contains("edgegate passwd"), "{bad}: {err}");
    }
}

#[test]
fn authentication_verdicts() {
    let open = config(true, None);
    assert_eq!(
        open.authenticate(None, None),
        Verdict::Allowed { verified: false }
    );
    assert_eq!(
        open.authenticate(Some("plc"), Some(b"s3cret")),
        Verdict::Allowed { verified: true }
    );
    assert_eq!(
        open.authenticate(Some("plc"), Some(b"wrong")),
        Verdict::BadCredentials
    );
    assert_eq!(
        open.authenticate(Some("plc"), None),
        Verdict::BadCredentials
    );
    // Users are configured: an unknown one is refused.
    assert_eq!(
        open.authenticate(Some("eve"), None),
        Verdict::BadCredentials
    );
    let closed = config(false, None);
    assert_eq!(closed.authenticate(None, None), Verdict::NotAuthorized);
    // No users configured and anonymous allowed: any name passes, unverified.
    let default = AuthConfig::default();
    assert_eq!(
        default.authenticate(Some("anyone"), Some(b"x")),
        Verdict::Allowed { verified: false }
    );
}

#[test]
fn acl_with_substitution() {
    let acl = config(
        true,
        Some(vec![
            rule(None, &["dev/%c/up"], &["dev/%c/down/#", "public/+"]),
            rule(Some("plc"), &["plc/%u/#"], &["#"]),
        ]),
    );
    assert!(acl.may_publish(None, "d1", "dev/d1/up"));
    assert!(!acl.may_publish(None, "d1", "dev/d2/up"));
    assert!(acl.may_subscribe(None, "d1", "dev/d1/down/#"));
    assert!(acl.may_subscribe(None, "d1", "dev/d1/down/x/+"));
    assert!(!acl.may_subscribe(None, "d1", "dev/+/down/#"));
    assert!(acl.may_subscribe(None, "d1", "public/a"));
    assert!(acl.may_subscribe(None, "d1", "public/+"));
    assert!(!acl.may_subscribe(None, "d1", "public/#"));
    assert!(!acl.may_subscribe(None, "d1", "#"));
    assert!(acl.may_publish(Some("plc"), "x", "plc/plc/a/b"));
    assert!(!acl.may_publish(None, "x", "plc/plc/a/b"));
    assert!(acl.may_subscribe(Some("plc"), "x", "#"));
    // Ids that would widen a pattern do not match it.
    assert!(!acl.may_publish(None, "+", "dev/x/up"));
    assert!(!acl.may_subscribe(None, "#", "dev/#/down/#"));
    assert!(!acl.may_subscribe(None, "a/b", "dev/a/b/down/#"));
    // No ACL: everything.
    let open = config(true, None);
    assert!(open.may_publish(None, "c", "any/thing"));
    assert!(open.may_subscribe(None, "c", "#"));
}

#[test]
fn covers_is_set_inclusion() {
    let cases = [
        ("#", "a/b", true),
        ("#", "#", true),
        ("a/#", "a", true),
        ("a/#", "a/#", true),
        ("a/#", "#", false),
        ("a/+", "a/+", true),
        ("a/+", "a/#", false),
        ("a/+", "a/b/c", false),
        ("+/b", "+/b", true),
        ("a/b", "a/+", false),
        ("a/b", "a/b", true),
        ("$SYS/#", "$SYS/broker/uptime", true),
        ("#", "$SYS/#", false),
    ];
    for (pattern, filter, want) in cases {
        assert_eq!(covers(pattern, filter), want, "{pattern} covers {filter}");
    }
}

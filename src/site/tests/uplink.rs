//! The `uplink:` section: credentials, failover brokers and forward routes.

use super::*;

#[test]
fn password_from_env_and_from_file() {
    std::env::set_var("EDGEGATE_TEST_PW_SET", "from-env");
    let c = ok(&format!(
        "{MINIMAL}uplink:\n  host: h\n  password_env: EDGEGATE_TEST_PW_SET\n"
    ));
    assert_eq!(c.uplink.unwrap().password.as_deref(), Some("from-env"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uplink.pass");
    std::fs::write(&path, "s3cret\n").unwrap();
    let c = ok(&format!(
        "{MINIMAL}uplink:\n  host: h\n  password_file: \"{}\"\n",
        path.display()
    ));
    assert_eq!(c.uplink.unwrap().password.as_deref(), Some("s3cret"));

    std::fs::write(&path, "with spaces  \r\n").unwrap();
    let c = ok(&format!(
        "{MINIMAL}uplink:\n  host: h\n  password_file: \"{}\"\n",
        path.display()
    ));
    assert_eq!(c.uplink.unwrap().password.as_deref(), Some("with spaces  "));
}

#[test]
fn password_problems() {
    std::env::remove_var("EDGEGATE_TEST_PW_UNSET");
    let errs = errors(&format!(
        "{MINIMAL}uplink:\n  host: h\n  password_env: EDGEGATE_TEST_PW_UNSET\n"
    ));
    assert_eq!(
            errs,
            vec!["site.yaml:5:17: uplink.password_env: environment variable `EDGEGATE_TEST_PW_UNSET` is not set"]
        );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pass");
    let errs = errors(&format!(
        "{MINIMAL}uplink:\n  host: h\n  password_file: \"{}\"\n",
        missing.display()
    ));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(&format!(
            "site.yaml:5:18: uplink.password_file: cannot read password file `{}`: ",
            missing.display()
        )),
        "{}",
        errs[0]
    );
    assert!(errs[0].contains("os error 2"), "{}", errs[0]);

    let errs = errors(&format!(
        "{MINIMAL}uplink:\n  host: h\n  password: a\n  password_env: B\n  password_file: /c\n"
    ));
    assert_eq!(
            errs,
            vec![
                "site.yaml:6:3: uplink: `password_env` conflicts with `password`: set at most one of password, password_file, password_env",
                "site.yaml:7:3: uplink: `password_file` conflicts with `password`: set at most one of password, password_file, password_env",
            ]
        );
}

#[test]
fn failover_entries_must_be_broker_addresses() {
    let errs = load_str(
        "site: s\ngateway: g\nuplink:\n  host: h\n  failover: [\"ok:1\", \"b:0\", \"[::1\", \"a b\"]\n",
        "site.yaml",
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "site.yaml:5:22: uplink.failover[1]: `0` in `b:0` is not a port (1 to 65535)",
            "site.yaml:5:29: uplink.failover[2]: `[::1`: `[` without `]`",
            "site.yaml:5:37: uplink.failover[3]: `a b` is not a broker address (expected host:port)",
        ]
    );
}

#[test]
fn routes_take_their_own_qos_and_are_checked_like_filters() {
    let c = ok(&format!(
        "{MINIMAL}uplink:\n  host: h\n  forward:\n    - \"{{site}}/#\"\n    - {{filter: alarms/#, qos: 2}}\n"
    ));
    let routes = c.uplink.unwrap().forward;
    assert_eq!(
        routes,
        vec![
            Route {
                filter: "s1/#".into(),
                qos: 1
            },
            Route {
                filter: "alarms/#".into(),
                qos: 2
            }
        ]
    );
    let errs = errors(&format!(
        "{MINIMAL}uplink:\n  host: h\n  forward:\n    - {{qos: 3}}\n    - {{filter: a/#/b, qos: 1, colour: red}}\n    - [x]\n"
    ));
    let n = MINIMAL.lines().count();
    assert_eq!(
        errs,
        vec![
            format!("site.yaml:{}:7: uplink.forward[0]: missing required key `filter`", n + 4),
            format!("site.yaml:{}:13: uplink.forward[0].qos: must be between 1 and 2, got 3", n + 4),
            format!("site.yaml:{}:16: uplink.forward[1]: `a/#/b` is not a valid topic filter: `#` must be the whole last level (e.g. a/b/#)", n + 5),
            format!("site.yaml:{}:31: uplink.forward[1]: unknown key `colour` (valid keys: filter, qos)", n + 5),
            format!("site.yaml:{}:7: uplink.forward[2]: expected a topic filter or a {{filter, qos}} mapping, found a list", n + 6),
        ]
    );
}

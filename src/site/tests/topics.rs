//! Topic templates, filters and ids.

use super::*;

#[test]
fn templates_must_keep_sensors_apart() {
    let errs = load_str(
            "site: s\ngateway: g\ntopics:\n  reading: \"{site}/{device}\"\n  device_status: \"{site}/status\"\n",
            "site.yaml",
        )
        .unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("site.yaml:4:12: topics.reading: `{site}/{device}` lacks {quantity}"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("site.yaml:5:18: topics.device_status: `{site}/status` lacks {device}"),
        "{text:?}"
    );
}

#[test]
fn unknown_placeholders_are_undefined_references() {
    let text = "\
site: s
gateway: g
topics:
  reading: \"{site}/{devcie}/{quantity}\"
  status: \"{site}/{gateway}/{device}/status\"
  device_status: \"{site}/{gateway\"
uplink:
  host: h
  client_id: \"{site}-{device}\"
  forward: [\"{site}/{gw}/#\", \"{site}/ok/#\"]
";
    let errs = errors(text);
    assert_eq!(
            errs,
            vec![
                "site.yaml:4:12: topics.reading: reference to undefined placeholder `{devcie}`; did you mean `{device}`? (defined here: {site}, {gateway}, {device}, {quantity})",
                "site.yaml:5:11: topics.status: reference to undefined placeholder `{device}` (defined here: {site}, {gateway})",
                "site.yaml:6:18: topics.device_status: `{` without a closing `}` in `{site}/{gateway`",
                "site.yaml:9:14: uplink.client_id: reference to undefined placeholder `{device}` (defined here: {site}, {gateway})",
                "site.yaml:10:13: uplink.forward[0]: reference to undefined placeholder `{gw}` (defined here: {site}, {gateway})",
            ]
        );
}

#[test]
fn topics_and_filters_are_validated() {
    let text = "\
site: s
gateway: g
topics:
  reading: \"\"
  status: \"{site}/+/status\"
uplink:
  host: \"\"
  client_id: \"{site}-{gateway}-0123456789012345678901234567890123456789012345678901234567890\"
  forward: [\"a/#/b\", \"a+/b\", \"\", \"+/x/#\", 5]
";
    let errs = errors(text);
    assert_eq!(
            errs,
            vec![
                "site.yaml:4:12: topics.reading: a topic template must not be empty",
                "site.yaml:5:11: topics.status: `{site}/+/status` contains a wildcard (`+` or `#`); a topic to publish to must not",
                "site.yaml:7:9: uplink.host: must not be empty",
                "site.yaml:8:14: uplink.client_id: `s-g-0123456789012345678901234567890123456789012345678901234567890` must be 1 to 64 characters long, got 65",
                "site.yaml:9:13: uplink.forward[0]: `a/#/b` is not a valid topic filter: `#` must be the whole last level (e.g. a/b/#)",
                "site.yaml:9:22: uplink.forward[1]: `a+/b` is not a valid topic filter: `+` must be a whole level (e.g. a/+/c)",
                "site.yaml:9:30: uplink.forward[2]: a topic filter must not be empty",
            ]
        );
}

#[test]
fn shared_subscriptions_are_not_forward_rules() {
    let text = "site: s\ngateway: g\nuplink:\n  host: h\n  forward: [\"$share/g/a/#\"]\n";
    assert_eq!(
        errors(text),
        vec!["site.yaml:5:13: uplink.forward[0]: `$share/g/a/#` is a shared subscription, for network clients of the local broker; forward the filter after `$share/{group}/`"]
    );
}

#[test]
fn ids_are_validated() {
    let text = "site: tank farm\ngateway: gw/01\ndevices:\n  cold room:\n    sim: {kind: level}\n";
    let errs = errors(text);
    assert_eq!(
            errs,
            vec![
                "site.yaml:1:7: site: `tank farm` is not a valid id: use only letters, digits, `_` and `-` (1 to 64 characters)",
                "site.yaml:2:10: gateway: `gw/01` is not a valid id: use only letters, digits, `_` and `-` (1 to 64 characters)",
                "site.yaml:4:3: devices: `cold room` is not a valid device id: use only letters, digits, `_` and `-` (1 to 64 characters)",
            ]
        );
    let long = "x".repeat(65);
    assert!(errors(&format!("site: {long}\ngateway: g\n"))[0].contains("1 to 64 characters long"));
}

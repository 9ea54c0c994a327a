//! Topic names, topic filters and matching (MQTT 3.1.1 section 4.7), and the shared subscription
//! form `$share/{group}/{filter}` (MQTT 5 section 4.8.2, offered to 3.1.1 clients too).

/// Longest string an MQTT UTF-8 field can carry.
pub const MAX_LEN: usize = 65_535;

/// A topic name a message can be published to: non-empty, no wildcards, no U+0000.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_LEN && !name.contains(['+', '#', '\0'])
}

/// What starts a shared subscription's filter.
pub const SHARE_PREFIX: &str = "$share/";

/// A topic filter: non-empty, no U+0000, `+` alone in its level, `#` alone in the last level.
/// One starting with `$share/` must be a valid shared subscription (see [`share_parts`]).
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.starts_with(SHARE_PREFIX) {
        return share_parts(filter).is_some();
    }
    valid_plain_filter(filter)
}

/// Splits a shared subscription `$share/{group}/{filter}` into its ShareName and filter; `None`
/// when `filter` is not one or is malformed (empty ShareName, `+`/`#` in it, no valid filter after).
pub fn share_parts(filter: &str) -> Option<(&str, &str)> {
    let (group, inner) = filter.strip_prefix(SHARE_PREFIX)?.split_once('/')?;
    (!group.is_empty() && !group.contains(['+', '#']) && valid_plain_filter(inner))
        .then_some((group, inner))
}

fn valid_plain_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_LEN || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether `filter` (valid) matches `topic` (a valid name). `+` matches one level, `#` this
/// level and everything below, including the parent (`a/#` matches `a`). Topics starting with `$`
/// are not matched by filters starting with a wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("site/gw/dev/temp"));
        assert!(valid_topic_name("$SYS/x"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a+b"));
        assert!(!valid_topic_name("a\0b"));
        assert!(!valid_topic_name(&"x".repeat(MAX_LEN + 1)));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "+/#", "$SYS/#",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in [
            "", "a#", "a/#/b", "#/a", "a/b#", "a+", "a/+b/c", "##", "a\0",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn shared_subscription_filters() {
        assert_eq!(share_parts("$share/g/a/+"), Some(("g", "a/+")));
        assert_eq!(share_parts("$share/g/#"), Some(("g", "#")));
        assert_eq!(share_parts("$share/g//"), Some(("g", "/")));
        assert_eq!(share_parts("a/b"), None);
        assert!(valid_topic_filter("$share/g/a/+"));
        // `$share` alone or another `$` prefix is an ordinary filter.
        assert!(valid_topic_filter("$share"));
        assert!(valid_topic_filter("$shared/a"));
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
            "$share/+/a",
            "$share/g/a#",
            "$share/g/a/#/b",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?}");
            assert_eq!(share_parts(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "b", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("+", "/", false),
            ("+/+", "/", true),
            ("/+", "/x", true),
            ("+/b/+", "a/b/c", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(matches("$SYS/+", "$SYS/uptime"));
        assert!(matches("a/+", "a/$x"));
    }
}

//! Decoding of `broker.auth` (users, anonymous, ACL) from the site config.

use std::collections::HashMap;

use super::auth::{AclRule, AuthConfig, PasswordHash};
use super::topic;
use crate::config::decode::{at_path, scalar_text, MapReader};
use crate::config::yaml::{Node, Value};

/// Decodes `broker.auth`; an absent section is the default (anonymous, no ACL). With
/// `cert_users` (`broker.tls.identity_as_username`) users may also come from client
/// certificates, so rules may name users without a password.
pub fn decode_auth(m: &mut MapReader, cert_users: bool) -> Option<AuthConfig> {
    let anonymous = m.bool("anonymous");
    let anonymous_ok = anonymous.is_some() || m.node("anonymous").is_none();
    let users = decode_users(m);
    let acl = decode_acl(m, users.as_ref().filter(|_| !cert_users));
    let mut ok = anonymous_ok;
    let no_users = users.as_ref().is_some_and(HashMap::is_empty) && !cert_users;
    if anonymous == Some(false) && no_users {
        m.error(
            "anonymous",
            "with `anonymous: false` no client could connect: add `users` (or client certificates, `broker.tls.identity_as_username`)",
        );
        ok = false;
    }
    let (users, acl) = (users?, acl?);
    ok.then_some(AuthConfig {
        anonymous: anonymous.unwrap_or(true),
        users,
        acl,
    })
}

fn decode_users(m: &mut MapReader) -> Option<HashMap<String, PasswordHash>> {
    let path = m.path_of("users");
    let Some(node) = m.node("users") else {
        return Some(HashMap::new());
    };
    let Value::Map(entries) = &node.value else {
        let msg = at_path(
            &path,
            &format!(
                "expected a mapping of user name to password hash, found {}",
                node.describe()
            ),
        );
        m.errors().push(node.pos, msg);
        return None;
    };
    let mut users = HashMap::new();
    let mut ok = true;
    for entry in entries {
        let key_path = format!("{path}.{}", entry.key);
        let parsed = scalar_text(&entry.value, "a password hash")
            .and_then(|(text, _)| PasswordHash::parse(text));
        match parsed {
            Ok(hash) if valid_user(&entry.key) => {
                users.insert(entry.key.clone(), hash);
            }
            Ok(_) => {
                let msg = at_path(
                    &key_path,
                    "a user name must be non-empty without `+`, `#`, `/` or U+0000",
                );
                m.errors().push(entry.key_pos, msg);
                ok = false;
            }
            Err(msg) => {
                m.errors().push(entry.value.pos, at_path(&key_path, &msg));
                ok = false;
            }
        }
    }
    ok.then_some(users)
}

/// A user name `%u` can stand for without changing a pattern's levels.
fn valid_user(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#', '/', '\0'])
}

/// `users`: to check rule owners against, when they decoded.
fn decode_acl(
    m: &mut MapReader,
    users: Option<&HashMap<String, PasswordHash>>,
) -> Option<Option<Vec<AclRule>>> {
    let path = m.path_of("acl");
    let Some(node) = m.node("acl") else {
        return Some(None);
    };
    let Value::Seq(items) = &node.value else {
        let msg = at_path(
            &path,
            &format!("expected a list of rules, found {}", node.describe()),
        );
        m.errors().push(node.pos, msg);
        return None;
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match decode_rule(item, format!("{path}[{i}]"), users, m) {
            Some(rule) => rules.push(rule),
            None => ok = false,
        }
    }
    ok.then_some(Some(rules))
}

fn decode_rule(
    item: &Node,
    path: String,
    users: Option<&HashMap<String, PasswordHash>>,
    parent: &mut MapReader,
) -> Option<AclRule> {
    let mut r = MapReader::new(item, path, item.pos, parent.errors())?;
    let user = r.string("user");
    let mut user_ok = user.is_some() || r.node("user").is_none();
    if let (Some(user), Some(users)) = (&user, users) {
        if !users.contains_key(user) {
            let msg = format!("`{user}` is not in `broker.auth.users`; only users with a password can have their own rules");
            r.error("user", msg);
            user_ok = false;
        }
    }
    let patterns = |r: &mut MapReader, key: &str| -> Option<Vec<String>> {
        let Some(list) = r.strings(key) else {
            return r.node(key).is_none().then(Vec::new);
        };
        let mut ok = true;
        let mut out = Vec::with_capacity(list.len());
        for p in list {
            // `%u`/`%c` stand for one whole level's text, so check with a stand-in value.
            if topic::valid_topic_filter(&p.value.replace("%u", "u").replace("%c", "c")) {
                out.push(p.value);
            } else {
                let msg = at_path(
                    &r.path_of(key),
                    &format!("`{}` is not a valid topic filter", p.value),
                );
                r.errors().push(p.pos, msg);
                ok = false;
            }
        }
        ok.then_some(out)
    };
    let publish = patterns(&mut r, "publish");
    let subscribe = patterns(&mut r, "subscribe");
    let (publish, subscribe) = (publish?, subscribe?);
    user_ok.then_some(())?;
    if publish.is_empty() && subscribe.is_empty() {
        r.error("publish", "a rule needs `publish` or `subscribe` patterns");
        return None;
    }
    Some(AclRule {
        user,
        publish,
        subscribe,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

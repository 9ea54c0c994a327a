//! Ids and templates: what ends up in topics and file names.

use super::decode::{closest, MapReader};

/// `[A-Za-z0-9_-]{1,64}`: site, gateway and device ids end up in topics and file names.
pub fn id_problem(s: &str) -> Option<String> {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let len = s.chars().count();
    if ok_chars && (1..=64).contains(&len) {
        None
    } else if !ok_chars {
        Some(format!(
            "`{s}` is not a valid id: use only letters, digits, `_` and `-` (1 to 64 characters)"
        ))
    } else {
        Some(format!(
            "`{s}` is not a valid id: it must be 1 to 64 characters long"
        ))
    }
}

pub fn id(m: &mut MapReader, key: &str) -> Option<String> {
    let s = m.string(key)?;
    match id_problem(&s) {
        None => Some(s),
        Some(problem) => {
            m.error(key, problem);
            None
        }
    }
}

/// Checks a template's `{placeholders}` against `allowed`.
pub fn placeholder_problem(template: &str, allowed: &[&str]) -> Option<String> {
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        if rest[i..].starts_with('}') {
            return Some(format!("`}}` without a matching `{{` in `{template}`"));
        }
        let after = &rest[i + 1..];
        let Some(end) = after.find('}') else {
            return Some(format!("`{{` without a closing `}}` in `{template}`"));
        };
        let name = &after[..end];
        if !allowed.contains(&name) {
            let list = allowed
                .iter()
                .map(|a| format!("{{{a}}}"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = closest(name, allowed.iter().copied())
                .map(|c| format!("; did you mean `{{{c}}}`?"))
                .unwrap_or_default();
            return Some(format!(
                "reference to undefined placeholder `{{{name}}}`{hint} (defined here: {list})"
            ));
        }
        rest = &after[end + 1..];
    }
    None
}

/// Expands `{site}` and `{gateway}` (and any other `{name}` given) in a template.
pub fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

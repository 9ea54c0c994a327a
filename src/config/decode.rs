//! A small toolkit for decoding a config section from the YAML node tree, collecting every
//! problem instead of stopping at the first.
//!
//! A [`MapReader`] wraps one YAML mapping. Each getter looks a key up, marks it used, converts
//! and range-checks the value, and on failure records a positioned error (dotted path, value
//! position) in the shared [`Errors`] and returns `None`. When the reader is dropped, every key
//! that nobody asked for is reported as unknown, with a suggestion of the closest asked-for key.
//!
//! ```
//! # use std::time::Duration;
//! # use edgegate::config::decode::{Errors, MapReader};
//! # use edgegate::config::yaml;
//! # struct SerialConfig { port: String, baud: u32, parity: String, timeout: Duration }
//! # use edgegate::config::units::{ms, secs};
//! // An adapter section, e.g. `serial:` under a device:
//! fn decode(m: &mut MapReader) -> Option<SerialConfig> {
//!     m.require(&["port"]);
//!     let port = m.string("port");
//!     let baud = m.int("baud", 1..=4_000_000u32).unwrap_or(9600);
//!     let parity = m.one_of("parity", &["none", "even", "odd"]).unwrap_or("none");
//!     let timeout = m.duration("timeout", ms(10)..=secs(60)).unwrap_or(secs(1));
//!     Some(SerialConfig { port: port?, baud, parity: parity.into(), timeout })
//! }
//! # let root = yaml::parse("port: /dev/ttyUSB0\nbaud: 19200\nparty: odd\n").unwrap().root.unwrap();
//! # let mut errs = Errors::new();
//! # let cfg = decode(&mut MapReader::new(&root, "devices.pump.serial", root.pos, &mut errs).unwrap());
//! # let cfg = cfg.unwrap();
//! # assert_eq!((cfg.port.as_str(), cfg.baud, cfg.parity.as_str()), ("/dev/ttyUSB0", 19200, "none"));
//! # assert_eq!(cfg.timeout, secs(1));
//! # let errs = errs.into_config_errors("site.yaml");
//! # assert_eq!(errs[0].to_string(), "site.yaml:3:1: devices.pump.serial: unknown key `party`; did you mean `parity`?");
//! ```
//! Getters return `None` both for "absent" and "invalid"; the error list tells them apart, and a
//! config is only built when that list is empty, so `unwrap_or(default)` is safe.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::units::{format_duration, format_size, parse_duration, parse_size};
use super::yaml::{Entry, Node, Pos, Problem, Value};
use super::ConfigError;

/// The shared list of problems found while decoding one file.
#[derive(Debug, Default)]
pub struct Errors {
    items: Vec<Problem>,
}

impl Errors {
    pub fn new() -> Errors {
        Errors::default()
    }

    pub fn push(&mut self, pos: Pos, message: impl Into<String>) {
        self.items.push(Problem {
            pos,
            message: message.into(),
        });
    }

    pub fn extend(&mut self, problems: impl IntoIterator<Item = Problem>) {
        self.items.extend(problems);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Sorted by line and column; exact repeats (e.g. from a YAML alias used twice) removed.
    pub fn into_config_errors(mut self, file: &str) -> Vec<ConfigError> {
        self.items.sort_by_key(|p| p.pos);
        let mut seen = std::collections::HashSet::new();
        self.items
            .retain(|p| seen.insert((p.pos, p.message.clone())));
        self.items
            .into_iter()
            .map(|p| ConfigError {
                file: file.to_string(),
                line: p.pos.line,
                col: p.pos.col,
                message: p.message,
            })
            .collect()
    }
}

/// A value with the position it came from, for checks made after decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

/// `a.b` (or `b` at the top level).
pub fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path: message` (or just `message` at the top level).
pub fn at_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// Reads one YAML mapping; see the module docs. Unused keys are reported when it is dropped.
pub struct MapReader<'a, 'e> {
    path: String,
    /// Where "missing key" errors point: the key this mapping sits under.
    pos: Pos,
    entries: &'a [Entry],
    used: Vec<bool>,
    /// Keys some getter asked for: the valid keys, for unknown-key suggestions.
    known: Vec<String>,
    errs: &'e mut Errors,
}

impl<'a, 'e> MapReader<'a, 'e> {
    /// A reader over `node`, which must be a mapping (or null, read as an empty mapping).
    /// `path` is its dotted path, `pos` where missing keys are reported (usually its key).
    pub fn new(
        node: &'a Node,
        path: impl Into<String>,
        pos: Pos,
        errs: &'e mut Errors,
    ) -> Option<MapReader<'a, 'e>> {
        let path = path.into();
        let entries: &'a [Entry] = match &node.value {
            Value::Map(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                errs.push(
                    node.pos,
                    at_path(
                        &path,
                        &format!("expected a mapping, found {}", node.describe()),
                    ),
                );
                return None;
            }
        };
        Some(MapReader {
            path,
            pos,
            used: vec![false; entries.len()],
            entries,
            known: Vec::new(),
            errs,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where this mapping's key is (where missing keys are reported).
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// The dotted path of `key` in this mapping.
    pub fn path_of(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// The shared error list, for checks the getters don't cover.
    pub fn errors(&mut self) -> &mut Errors {
        self.errs
    }

    /// Looks `key` up and marks it valid and used.
    pub fn entry(&mut self, key: &str) -> Option<&'a Entry> {
        if !self.known.iter().any(|k| k == key) {
            self.known.push(key.to_string());
        }
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        Some(&self.entries[i])
    }

    /// The value of `key`, `None` when absent or null. Marks it used.
    pub fn node(&mut self, key: &str) -> Option<&'a Node> {
        self.entry(key).map(|e| &e.value).filter(|n| !n.is_null())
    }

    /// Whether `key` is present (even with a null value). Marks it used.
    pub fn has(&mut self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// Position of `key`'s value, or of `key` itself when the value is null; `None` if absent.
    pub fn value_pos(&mut self, key: &str) -> Option<Pos> {
        self.entry(key).map(|e| e.value.pos)
    }

    /// Reports a missing-key error (at this mapping's key) for each of `keys` that is absent or
    /// null. The values are still read with the ordinary getters.
    pub fn require(&mut self, keys: &[&str]) {
        for key in keys {
            if self.node(key).is_none() {
                let msg = at_path(&self.path, &format!("missing required key `{key}`"));
                self.errs.push(self.pos, msg);
            }
        }
    }

    /// Records an error about `key`'s value, at the value (or at this mapping if absent).
    pub fn error(&mut self, key: &str, message: impl Display) {
        let pos = self.value_pos(key).unwrap_or(self.pos);
        let msg = at_path(&self.path_of(key), &message.to_string());
        self.errs.push(pos, msg);
    }

    /// Records an error about `key` itself (e.g. a conflict), at the key.
    pub fn key_error(&mut self, key: &str, message: impl Display) {
        let pos = self.entry(key).map_or(self.pos, |e| e.key_pos);
        let msg = at_path(&self.path, &message.to_string());
        self.errs.push(pos, msg);
    }

    /// Converts `key`'s scalar text with `parse`; errors from `parse` are reported at the value.
    /// The building block for every scalar getter; use it for adapter-specific value types.
    pub fn parse_with<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let node = self.node(key)?;
        let result = scalar_text(node, expected).and_then(|(text, _)| parse(text));
        self.report(key, node, result)
    }

    fn report<T>(&mut self, key: &str, node: &Node, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(msg) => {
                let msg = at_path(&self.path_of(key), &msg);
                self.errs.push(node.pos, msg);
                None
            }
        }
    }

    /// Any scalar, as written (`01` stays `01`).
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.parse_with(key, "a string", |s| Ok(s.to_string()))
    }

    /// Like [`string`](Self::string), with the value's position.
    pub fn spanned_string(&mut self, key: &str) -> Option<Spanned<String>> {
        let pos = self.value_pos(key)?;
        self.string(key).map(|value| Spanned { value, pos })
    }

    /// `true` / `false` (also `True`, `FALSE`, ...).
    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let node = self.node(key)?;
        let result = number_text(node, "true or false").and_then(|t| match t {
            "true" | "True" | "TRUE" => Ok(true),
            "false" | "False" | "FALSE" => Ok(false),
            _ => Err(format!("expected true or false, found {}", node.describe())),
        });
        self.report(key, node, result)
    }

    /// An integer within `range` (decimal, or `0x`/`0o` prefixed).
    pub fn int<T>(&mut self, key: &str, range: RangeInclusive<T>) -> Option<T>
    where
        T: Copy + Display + TryFrom<i128> + TryInto<i128>,
    {
        let node = self.node(key)?;
        let lo: i128 = (*range.start()).try_into().unwrap_or(i128::MIN);
        let hi: i128 = (*range.end()).try_into().unwrap_or(i128::MAX);
        let result = to_int(node).and_then(|n| {
            if n < lo || n > hi {
                Err(range_message(range.start(), range.end(), &n, false, false))
            } else {
                T::try_from(n)
                    .map_err(|_| range_message(range.start(), range.end(), &n, false, false))
            }
        });
        self.report(key, node, result)
    }

    /// A finite number (integers accepted) within `range`; use `f64::NEG_INFINITY` /
    /// `f64::INFINITY` for an open end.
    pub fn float(&mut self, key: &str, range: RangeInclusive<f64>) -> Option<f64> {
        let node = self.node(key)?;
        let (lo, hi) = (*range.start(), *range.end());
        let result = to_float(node).and_then(|x| {
            if x < lo || x > hi {
                Err(range_message(
                    &lo,
                    &hi,
                    &x,
                    lo == f64::NEG_INFINITY,
                    hi == f64::INFINITY,
                ))
            } else {
                Ok(x)
            }
        });
        self.report(key, node, result)
    }

    /// A duration (`200ms`, `1h30m`, ...) within `range`; `Duration::MAX` for no upper bound.
    pub fn duration(&mut self, key: &str, range: RangeInclusive<Duration>) -> Option<Duration> {
        let node = self.node(key)?;
        let (lo, hi) = (*range.start(), *range.end());
        let result = scalar_text(node, "a duration (e.g. 5s)")
            .and_then(|(t, _)| parse_duration(t))
            .and_then(|d| {
                if d < lo || d > hi {
                    Err(range_message(
                        &format_duration(lo),
                        &format_duration(hi),
                        &format_duration(d),
                        lo.is_zero(),
                        hi == Duration::MAX,
                    ))
                } else {
                    Ok(d)
                }
            });
        self.report(key, node, result)
    }

    /// A size in bytes (`4096`, `512KiB`, `5MB`, ...) within `range`.
    pub fn size(&mut self, key: &str, range: RangeInclusive<u64>) -> Option<u64> {
        let node = self.node(key)?;
        let (lo, hi) = (*range.start(), *range.end());
        let result = scalar_text(node, "a size (e.g. 64KiB)")
            .and_then(|(t, _)| parse_size(t))
            .and_then(|n| {
                if n < lo || n > hi {
                    Err(range_message(
                        &format_size(lo),
                        &format_size(hi),
                        &format_size(n),
                        lo == 0,
                        hi == u64::MAX,
                    ))
                } else {
                    Ok(n)
                }
            });
        self.report(key, node, result)
    }

    /// One of a fixed set of words; a near miss gets a suggestion.
    pub fn one_of(&mut self, key: &str, choices: &[&'static str]) -> Option<&'static str> {
        self.parse_with(key, "a string", |s| {
            if let Some(c) = choices.iter().find(|c| **c == s) {
                return Ok(*c);
            }
            let mut msg = format!("`{s}` is not one of: {}", choices.join(", "));
            if let Some(c) = closest(s, choices.iter().copied()) {
                msg.push_str(&format!("; did you mean `{c}`?"));
            }
            Err(msg)
        })
    }

    /// An IP socket address: `0.0.0.0:1883`, `[::1]:1883` (quote IPv6 in YAML).
    pub fn socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        self.parse_with(key, "an address like 0.0.0.0:1883", |s| {
            s.parse::<SocketAddr>().map_err(|_| {
                format!("`{s}` is not an IP address with a port; e.g. 0.0.0.0:1883, 127.0.0.1:1883, \"[::1]:1883\"")
            })
        })
    }

    /// A list of scalars, each with its position.
    pub fn strings(&mut self, key: &str) -> Option<Vec<Spanned<String>>> {
        let node = self.node(key)?;
        let path = self.path_of(key);
        let Value::Seq(items) = &node.value else {
            self.errs.push(
                node.pos,
                at_path(
                    &path,
                    &format!("expected a list, found {}", node.describe()),
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match scalar_text(item, "a string") {
                Ok((text, _)) if !item.is_null() => out.push(Spanned {
                    value: text.to_string(),
                    pos: item.pos,
                }),
                Ok(_) => {
                    ok = false;
                    self.errs.push(
                        item.pos,
                        format!("{path}[{i}]: expected a string, found nothing"),
                    );
                }
                Err(msg) => {
                    ok = false;
                    self.errs.push(item.pos, format!("{path}[{i}]: {msg}"));
                }
            }
        }
        ok.then_some(out)
    }

    /// A nested mapping (null reads as empty); `None` if absent or not a mapping.
    /// Drop (or [`finish`](Self::finish)) it before using `self` again.
    pub fn map<'s>(&'s mut self, key: &str) -> Option<MapReader<'a, 's>> {
        let entry = self.entry(key)?;
        let path = self.path_of(key);
        MapReader::new(&entry.value, path, entry.key_pos, self.errs)
    }

    /// A nested section whose keys all have defaults: like [`map`](Self::map), but an absent
    /// key reads as an empty mapping, so defaults apply. `None` only if it is not a mapping.
    pub fn section<'s>(&'s mut self, key: &str) -> Option<MapReader<'a, 's>> {
        let path = self.path_of(key);
        match self.entry(key) {
            Some(entry) => MapReader::new(&entry.value, path, entry.key_pos, self.errs),
            None => Some(MapReader {
                path,
                pos: self.pos,
                entries: &[],
                used: Vec::new(),
                known: Vec::new(),
                errs: self.errs,
            }),
        }
    }

    /// Calls `f` with every key of this mapping (all of them are valid: ids, quantities...) and
    /// a reader over its value, which must be a mapping (null reads as empty).
    pub fn for_each_map(&mut self, mut f: impl FnMut(Spanned<&'a str>, &mut MapReader<'a, '_>)) {
        for (i, entry) in self.entries.iter().enumerate() {
            self.used[i] = true;
            let path = self.path_of(&entry.key);
            if let Some(mut sub) = MapReader::new(&entry.value, path, entry.key_pos, self.errs) {
                let key = Spanned {
                    value: entry.key.as_str(),
                    pos: entry.key_pos,
                };
                f(key, &mut sub);
            }
        }
    }

    /// Marks every key used: after an error that makes the rest meaningless (e.g. unknown
    /// `kind`), so it doesn't also produce a pile of unknown-key errors.
    pub fn skip_rest(&mut self) {
        self.used.iter_mut().for_each(|u| *u = true);
    }

    /// Reports unknown keys now (dropping does the same).
    pub fn finish(self) {}

    fn report_unknown(&mut self) {
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let mut msg = format!("unknown key `{}`", entry.key);
            if let Some(c) = closest(&entry.key, self.known.iter().map(String::as_str)) {
                msg.push_str(&format!("; did you mean `{c}`?"));
            } else if self.known.is_empty() {
                msg.push_str(" (no keys are allowed here)");
            } else {
                msg.push_str(&format!(" (valid keys: {})", self.known.join(", ")));
            }
            self.errs.push(entry.key_pos, at_path(&self.path, &msg));
        }
    }
}

impl Drop for MapReader<'_, '_> {
    fn drop(&mut self) {
        self.report_unknown();
    }
}

/// The text of a scalar node, or a type error naming `expected`.
pub fn scalar_text<'n>(node: &'n Node, expected: &str) -> Result<(&'n str, bool), String> {
    match &node.value {
        Value::Scalar { text, quoted } => Ok((text, *quoted)),
        _ => Err(format!("expected {expected}, found {}", node.describe())),
    }
}

/// The text of an unquoted scalar (numbers, booleans); a quoted one is a type error.
fn number_text<'n>(node: &'n Node, expected: &str) -> Result<&'n str, String> {
    match scalar_text(node, expected)? {
        (text, false) => Ok(text),
        (text, true) => Err(format!(
            "expected {expected}, found the string \"{text}\" (remove the quotes)"
        )),
    }
}

/// An integer: decimal, `0x` hex or `0o` octal, optionally signed.
pub fn to_int(node: &Node) -> Result<i128, String> {
    let text = number_text(node, "an integer")?;
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16)
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8)
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>()
    } else {
        return Err(format!("expected an integer, found {}", node.describe()));
    };
    let n = parsed.map_err(|_| format!("expected an integer, found {}", node.describe()))?;
    Ok(if neg { -n } else { n })
}

/// A finite number; integers are accepted.
pub fn to_float(node: &Node) -> Result<f64, String> {
    let text = number_text(node, "a number")?;
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    match text.parse::<f64>() {
        Ok(x) if looks_numeric && x.is_finite() => Ok(x),
        _ => Err(format!("expected a number, found {}", node.describe())),
    }
}

fn range_message<A: Display, B: Display>(
    lo: &A,
    hi: &A,
    got: &B,
    open_lo: bool,
    open_hi: bool,
) -> String {
    match (open_lo, open_hi) {
        (true, false) => format!("must be at most {hi}, got {got}"),
        (false, true) => format!("must be at least {lo}, got {got}"),
        _ => format!("must be between {lo} and {hi}, got {got}"),
    }
}

/// The candidate closest to `word` if it is close enough to be a likely typo.
pub fn closest<'k>(word: &str, candidates: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let w = word.to_lowercase();
    candidates
        .map(|c| (levenshtein(&w, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2 && *d * 3 <= c.chars().count().max(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;

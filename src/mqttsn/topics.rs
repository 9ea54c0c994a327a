//! Topic ids: one table per client for normal ids (registered by the client with REGISTER, or by
//! the gateway before it delivers a publish), the gateway-wide predefined ids from config, and
//! the 2-character short names that need no id at all.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::codec::TopicRef;
use crate::bus::topic;

/// The predefined ids of the config, both ways.
#[derive(Debug, Default)]
pub struct Predefined {
    by_id: HashMap<u16, String>,
    by_name: HashMap<String, u16>,
}

impl Predefined {
    pub fn new(list: &[(u16, String)]) -> Predefined {
        let mut p = Predefined::default();
        for (id, name) in list {
            p.by_id.insert(*id, name.clone());
            p.by_name.insert(name.clone(), *id);
        }
        p
    }

    pub fn name(&self, id: u16) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    pub fn id(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }
}

/// A short topic name as text: two bytes of UTF-8 without wildcards.
pub fn short_name(s: [u8; 2]) -> Option<String> {
    let name = std::str::from_utf8(&s).ok()?;
    topic::valid_topic_name(name).then(|| name.to_owned())
}

/// One client's normal topic ids. An id the gateway assigned is only used in a PUBLISH once the
/// client has acknowledged its REGISTER (`known`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Table {
    /// id -> (name, the client knows it).
    ids: HashMap<u16, (String, bool)>,
    #[serde(skip)]
    names: HashMap<String, u16>,
    next: u16,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Full,
}

impl Table {
    /// Rebuilds the name index after deserializing.
    pub fn reindex(&mut self) {
        self.names = self
            .ids
            .iter()
            .map(|(id, (n, _))| (n.clone(), *id))
            .collect();
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn name(&self, id: u16) -> Option<&str> {
        self.ids.get(&id).map(|(n, _)| n.as_str())
    }

    /// The id of `name` and whether the client knows it.
    pub fn lookup(&self, name: &str) -> Option<(u16, bool)> {
        let id = *self.names.get(name)?;
        self.ids.get(&id).map(|(_, k)| (id, *k))
    }

    /// The id for `name`, assigning a new one (1..=0xFFFE) if needed; `known` marks it as known
    /// to the client (it registered it, or got it in a SUBACK).
    pub fn assign(&mut self, name: &str, known: bool, max: usize) -> Result<u16, Full> {
        if let Some(&id) = self.names.get(name) {
            if known {
                if let Some(e) = self.ids.get_mut(&id) {
                    e.1 = true;
                }
            }
            return Ok(id);
        }
        if self.ids.len() >= max.min(0xFFFE) {
            return Err(Full::Full);
        }
        loop {
            self.next = if self.next >= 0xFFFE {
                1
            } else {
                self.next + 1
            };
            if !self.ids.contains_key(&self.next) {
                break;
            }
        }
        self.ids.insert(self.next, (name.to_owned(), known));
        self.names.insert(name.to_owned(), self.next);
        Ok(self.next)
    }

    pub fn acknowledge(&mut self, id: u16) {
        if let Some(e) = self.ids.get_mut(&id) {
            e.1 = true;
        }
    }

    pub fn remove(&mut self, id: u16) {
        if let Some((name, _)) = self.ids.remove(&id) {
            self.names.remove(&name);
        }
    }

    pub fn clear(&mut self) {
        self.ids.clear();
        self.names.clear();
    }
}

/// How a topic is addressed towards a client: predefined and short names need no REGISTER.
pub enum Route {
    Ready(TopicRef),
    /// Needs REGISTER(id) first (the id is assigned, not yet known to the client).
    Register(u16),
    Full,
}

pub fn route(name: &str, predefined: &Predefined, table: &mut Table, max: usize) -> Route {
    if let Some(id) = predefined.id(name) {
        return Route::Ready(TopicRef::Predefined(id));
    }
    if let &[a, b] = name.as_bytes() {
        return Route::Ready(TopicRef::Short([a, b]));
    }
    match table.assign(name, false, max) {
        Ok(id) => match table.lookup(name) {
            Some((_, true)) => Route::Ready(TopicRef::Id(id)),
            _ => Route::Register(id),
        },
        Err(Full::Full) => Route::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_lookup_ack_and_reindex() {
        let mut t = Table::default();
        assert_eq!(t.assign("a/b", true, 10), Ok(1));
        assert_eq!(t.assign("a/c", false, 10), Ok(2));
        assert_eq!(t.assign("a/b", false, 10), Ok(1));
        assert_eq!(t.lookup("a/c"), Some((2, false)));
        t.acknowledge(2);
        assert_eq!(t.lookup("a/c"), Some((2, true)));
        let json = serde_json::to_string(&t).unwrap();
        let mut back: Table = serde_json::from_str(&json).unwrap();
        back.reindex();
        assert_eq!(back.lookup("a/b"), Some((1, true)));
        assert_eq!(back.assign("a/d", true, 10), Ok(3));
        assert_eq!(back.assign("a/e", true, 3), Err(Full::Full));
    }

    #[test]
    fn routes_prefer_predefined_and_short() {
        let p = Predefined::new(&[(7, "cmd/all".into())]);
        let mut t = Table::default();
        assert!(matches!(
            route("cmd/all", &p, &mut t, 5),
            Route::Ready(TopicRef::Predefined(7))
        ));
        assert!(matches!(
            route("ab", &p, &mut t, 5),
            Route::Ready(TopicRef::Short(s)) if &s == b"ab"
        ));
        assert!(matches!(route("x/y", &p, &mut t, 5), Route::Register(1)));
        t.acknowledge(1);
        assert!(matches!(
            route("x/y", &p, &mut t, 5),
            Route::Ready(TopicRef::Id(1))
        ));
        assert_eq!(short_name(*b"a+"), None);
        assert_eq!(short_name(*b"ok").as_deref(), Some("ok"));
    }
}

//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2): each message that
//! matches a group's filter goes to ONE of its members, round robin over the connected ones.
//!
//! A group is identified by its whole filter string: `$share/g/a` and `$share/g/b` are two
//! groups, each delivering one copy. Members are client ids with their subscription (`S`: the
//! granted QoS and whatever options the router keeps); the router removes a client from every
//! group when its session ends.

use std::collections::HashMap;

use super::topic;

struct Group<S> {
    /// The filter after `$share/{group}/`.
    filter: String,
    /// Client id and subscription, in subscription order.
    members: Vec<(String, S)>,
    /// Where the next round robin search starts.
    next: usize,
}

pub(crate) struct Groups<S> {
    by_filter: HashMap<String, Group<S>>,
}

impl<S> Default for Groups<S> {
    fn default() -> Self {
        Groups {
            by_filter: HashMap::new(),
        }
    }
}

impl<S: Copy> Groups<S> {
    /// Adds `client_id` to the group of `shared` (a valid `$share/...` filter), or updates its
    /// subscription if it is a member already.
    pub fn subscribe(&mut self, shared: &str, client_id: &str, sub: S) {
        let Some((_, filter)) = topic::share_parts(shared) else {
            return;
        };
        let group = self
            .by_filter
            .entry(shared.to_owned())
            .or_insert_with(|| Group {
                filter: filter.to_owned(),
                members: Vec::new(),
                next: 0,
            });
        match group.members.iter_mut().find(|(id, _)| id == client_id) {
            Some(member) => member.1 = sub,
            None => group.members.push((client_id.to_owned(), sub)),
        }
    }

    /// Removes `client_id` from the group of `shared`; whether it was a member.
    pub fn unsubscribe(&mut self, shared: &str, client_id: &str) -> bool {
        let Some(group) = self.by_filter.get_mut(shared) else {
            return false;
        };
        let before = group.members.len();
        group.members.retain(|(id, _)| id != client_id);
        let removed = group.members.len() != before;
        if group.members.is_empty() {
            self.by_filter.remove(shared);
        }
        removed
    }

    /// Removes `client_id` from every group (its session ended).
    pub fn remove_client(&mut self, client_id: &str) {
        self.by_filter.retain(|_, g| {
            g.members.retain(|(id, _)| id != client_id);
            !g.members.is_empty()
        });
    }

    /// The shared filters `client_id` is a member of, with its subscription there.
    pub fn of_client(&self, client_id: &str) -> Vec<(String, S)> {
        let mut subs: Vec<(String, S)> = self
            .by_filter
            .iter()
            .filter_map(|(shared, g)| {
                let (_, sub) = g.members.iter().find(|(id, _)| id == client_id)?;
                Some((shared.clone(), *sub))
            })
            .collect();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        subs
    }

    /// For each group whose filter matches `topic`, the member that gets this message, with its
    /// subscription: the next connected member in round robin order; if none is connected and
    /// `qos > 0`, the next member (whose persistent session queues it while offline).
    pub fn pick(
        &mut self,
        topic_name: &str,
        qos: u8,
        connected: impl Fn(&str) -> bool,
    ) -> Vec<(&str, S)> {
        let mut out = Vec::new();
        for g in self.by_filter.values_mut() {
            if !topic::matches(&g.filter, topic_name) {
                continue;
            }
            let n = g.members.len();
            let start = g.next % n.max(1);
            let online = (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| connected(&g.members[i].0));
            let chosen = match online {
                Some(i) => i,
                None if qos > 0 && n > 0 => start,
                None => continue,
            };
            g.next = chosen + 1;
            let (id, granted) = &g.members[chosen];
            out.push((id.as_str(), *granted));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_over_connected_members_then_offline_for_qos1() {
        let mut g = Groups::<u8>::default();
        for id in ["a", "b", "c"] {
            g.subscribe("$share/g/t/+", id, 1);
        }
        g.subscribe("$share/g/t/+", "b", 2); // updates, does not add
        let all = |_: &str| true;
        let picks: Vec<String> = (0..4)
            .map(|_| g.pick("t/1", 2, all)[0].0.to_owned())
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a"]);
        assert_eq!(g.pick("t/1", 2, all), [("b", 2)]);
        // Only "a" is connected: it gets everything.
        let only_a = |id: &str| id == "a";
        assert_eq!(g.pick("t/1", 1, only_a), [("a", 1)]);
        assert_eq!(g.pick("t/1", 1, only_a), [("a", 1)]);
        // Nobody connected: QoS 1 goes to one offline member, QoS 0 to none.
        let none = |_: &str| false;
        assert_eq!(g.pick("t/1", 1, none).len(), 1);
        assert!(g.pick("t/1", 0, none).is_empty());
        assert!(g.pick("other", 1, all).is_empty());
    }

    #[test]
    fn groups_are_per_filter_and_members_leave() {
        let mut g = Groups::<u8>::default();
        g.subscribe("$share/g/#", "a", 0);
        g.subscribe("$share/h/#", "b", 1);
        g.subscribe("$share/g/x", "a", 1);
        let mut picks = g.pick("x", 1, |_| true);
        picks.sort();
        assert_eq!(picks, [("a", 0), ("a", 1), ("b", 1)]);
        assert_eq!(
            g.of_client("a"),
            [("$share/g/#".to_string(), 0), ("$share/g/x".to_string(), 1)]
        );
        assert!(g.unsubscribe("$share/g/x", "a"));
        assert!(!g.unsubscribe("$share/g/x", "a"));
        assert!(!g.unsubscribe("$share/none/x", "a"));
        g.remove_client("a");
        assert_eq!(g.pick("x", 1, |_| true), [("b", 1)]);
        g.remove_client("b");
        assert!(g.by_filter.is_empty());
    }
}

//! Shared subscriptions, session expiry and delayed wills in the router.

use std::time::{Duration, SystemTime};

use super::*;
use crate::bus::codec::SubOptions;
use crate::bus::expiry::{DelayedWill, NEVER};

fn after(secs: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(secs)
}

fn will(topic: &str, delay: u32) -> Option<DelayedWill> {
    Some(DelayedWill {
        msg: msg(topic, b"gone", 1, false),
        delay,
    })
}

/// Subscribes with these filters and granted QoS: the one place that knows the router's
/// subscription type.
fn sub(r: &Router, client_id: &str, conn_id: u64, filters: &[(&str, u8)]) -> Vec<u8> {
    let filters: Vec<(String, SubOptions)> = filters
        .iter()
        .map(|(f, q)| (f.to_string(), SubOptions::qos(*q)))
        .collect();
    r.subscribe(client_id, conn_id, &filters, None)
}

fn ending(will: Option<DelayedWill>) -> Detach {
    Detach {
        will,
        ..Detach::default()
    }
}

#[tokio::test]
async fn shared_group_round_robin_and_both_kinds_of_subscription() {
    let r = Router::new(8, 100);
    let a = attach(&r, "a", true).await;
    let b = attach(&r, "b", true).await;
    assert_eq!(
        sub(&r, "a", a.conn_id, &[("$share/g/s/+", 1), ("s/#", 0)]),
        [1, 0]
    );
    sub(&r, "b", b.conn_id, &[("$share/g/s/+", 0)]);
    for t in ["s/1", "s/2", "s/3", "s/4"] {
        r.route(msg(t, b"", 1, false)).await;
    }
    // "a" gets every message once through `s/#` at QoS 0, plus every other one from the group
    // at QoS 1; "b" the rest, downgraded to its QoS 0.
    assert_eq!(
        drain(&a.queue),
        [
            ("s/1".to_string(), 0, false),
            ("s/1".to_string(), 1, false),
            ("s/2".to_string(), 0, false),
            ("s/3".to_string(), 0, false),
            ("s/3".to_string(), 1, false),
            ("s/4".to_string(), 0, false),
        ]
    );
    assert_eq!(
        drain(&b.queue),
        [("s/2".to_string(), 0, false), ("s/4".to_string(), 0, false)]
    );
    // Unsubscribed by the full `$share/...` filter: "a" keeps only its ordinary one.
    r.unsubscribe("a", a.conn_id, &["$share/g/s/+".into()]);
    r.route(msg("s/5", b"", 1, false)).await;
    assert_eq!(drain(&a.queue), [("s/5".to_string(), 0, false)]);
    assert_eq!(drain(&b.queue), [("s/5".to_string(), 0, false)]);
}

#[tokio::test]
async fn shared_subscription_gets_no_retained_and_offline_member_queues() {
    let r = Router::new(8, 100);
    r.route(msg("r/1", b"kept", 1, true)).await;
    let p = attach(&r, "p", false).await;
    let c = attach(&r, "c", true).await;
    sub(&r, "p", p.conn_id, &[("$share/g/r/#", 1)]);
    sub(&r, "c", c.conn_id, &[("$share/g/r/#", 1)]);
    assert!(p.queue.pop().is_none());
    // The clean member leaves its group with its session; the persistent one goes offline.
    r.detach("c", c.conn_id, Detach::default());
    r.detach("p", p.conn_id, Detach::default());
    r.route(msg("r/2", b"", 0, false)).await;
    r.route(msg("r/3", b"", 1, false)).await;
    let p = attach(&r, "p", false).await;
    assert!(p.session_present);
    assert_eq!(drain(&p.queue), [("r/3".to_string(), 1, false)]);
    // A clean start discards the membership with the session.
    let p = attach(&r, "p", true).await;
    r.route(msg("r/4", b"", 1, false)).await;
    assert!(p.queue.pop().is_none());
}

#[tokio::test]
async fn session_expires_after_its_interval_with_its_queue() {
    let r = Router::new(8, 100);
    let a = attach_v5(&r, "a", true, 10).await;
    sub(&r, "a", a.conn_id, &[("q", 1), ("$share/g/q", 1)]);
    r.detach("a", a.conn_id, Detach::default());
    r.route(msg("q", b"", 1, false)).await;
    let (wills, next) = r.sweep(after(5));
    assert!(wills.is_empty());
    let next = next.expect("a deadline");
    assert!(next > after(8) && next <= after(10), "{next:?}");
    assert!(r.has_session("a"));
    assert_eq!(r.sweep(after(11)), (vec![], None));
    assert!(!r.has_session("a"));
    assert_eq!(r.stats.snapshot().expired, 1);
    let a = attach_v5(&r, "a", false, 10).await;
    assert!(!a.session_present);
    assert!(a.queue.pop().is_none());
    // The group went with the session.
    r.route(msg("q", b"", 1, false)).await;
    assert!(a.queue.pop().is_none());
}

#[tokio::test]
async fn expiry_set_by_disconnect_and_never_and_zero() {
    let r = Router::new(8, 100);
    let a = attach_v5(&r, "a", false, 0).await;
    let end = Detach {
        expiry: Some(30),
        ..Detach::default()
    };
    r.detach("a", a.conn_id, end);
    assert!(r.has_session("a"));
    r.sweep(after(29));
    assert!(r.has_session("a"));
    r.sweep(after(31));
    assert!(!r.has_session("a"));
    let n = attach_v5(&r, "n", false, NEVER).await;
    r.detach("n", n.conn_id, Detach::default());
    assert_eq!(r.sweep(after(10 * 365 * 86_400)), (vec![], None));
    assert!(r.has_session("n"));
    let z = attach_v5(&r, "z", false, 0).await;
    r.detach("z", z.conn_id, Detach::default());
    assert!(!r.has_session("z"));
    // Removed at once, not counted as expired.
    assert_eq!(r.stats.snapshot().expired, 1);
}

#[tokio::test]
async fn will_waits_for_its_delay_unless_the_client_returns() {
    let r = Router::new(8, 100);
    let a = attach_v5(&r, "a", false, 100).await;
    assert_eq!(r.detach("a", a.conn_id, ending(will("w/a", 5))), None);
    let (wills, next) = r.sweep(after(3));
    assert!(wills.is_empty());
    assert!(next.is_some_and(|t| t <= after(5)));
    let (wills, _) = r.sweep(after(6));
    assert_eq!(wills, [msg("w/a", b"gone", 1, false)]);
    assert!(r.sweep(after(7)).0.is_empty(), "published once");

    // Back in time: no will.
    let b = attach_v5(&r, "b", false, 100).await;
    r.detach("b", b.conn_id, ending(will("w/b", 5)));
    let b = attach_v5(&r, "b", false, 100).await;
    assert!(b.session_present);
    assert!(r.sweep(after(6)).0.is_empty());

    // Delay 0, or the session ending first, publish at once or at the expiry.
    let c = attach_v5(&r, "c", false, 100).await;
    assert!(r.detach("c", c.conn_id, ending(will("w/c", 0))).is_some());
    let d = attach_v5(&r, "d", false, 3).await;
    r.detach("d", d.conn_id, ending(will("w/d", 60)));
    assert_eq!(r.sweep(after(4)).0, [msg("w/d", b"gone", 1, false)]);
    let e = attach_v5(&r, "e", true, 0).await;
    assert!(r.detach("e", e.conn_id, ending(will("w/e", 60))).is_some());
}

#[tokio::test]
async fn clean_start_within_the_will_delay_ends_the_old_session_without_its_will() {
    let r = Router::new(8, 100);
    let s = attach(&r, "sub", true).await;
    sub(&r, "sub", s.conn_id, &[("w/#", 1)]);
    let a = attach_v5(&r, "a", false, 100).await;
    r.detach("a", a.conn_id, ending(will("w/a", 60)));
    let a = attach_v5(&r, "a", true, 100).await;
    assert!(!a.session_present);
    assert!(drain(&s.queue).is_empty());
    assert!(r.sweep(after(61)).0.is_empty());
    // Its delay passed before the client came back (the sweep had not run): published then.
    r.detach("a", a.conn_id, ending(will("w/a", 1)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = attach_v5(&r, "a", true, 100).await;
    assert!(!a.session_present);
    assert_eq!(drain(&s.queue), [("w/a".to_string(), 1, false)]);
}

#[tokio::test]
async fn takeover_publishes_old_will_only_for_a_clean_start() {
    for (clean, published) in [(false, false), (true, true)] {
        let r = std::sync::Arc::new(Router::new(8, 100));
        let ConnectOutcome::Accepted(old) = r.connect(Some("t".into()), false, 100).await else {
            unreachable!()
        };
        let r2 = r.clone();
        let old_task = tokio::spawn(async move {
            old.queue.kicked(old.conn_id).await;
            r2.detach("t", old.conn_id, ending(will("w/t", 0)))
        });
        let new = attach_v5(&r, "t", clean, 100).await;
        assert_eq!(new.session_present, !clean);
        let will = old_task.await.unwrap();
        assert_eq!(will.is_some(), published, "clean start {clean}");
        assert!(r.sweep(after(200)).0.is_empty());
    }
}

#[tokio::test]
async fn reconnect_after_expiry_before_the_sweep_finds_no_session() {
    let r = Router::new(8, 100);
    let s = attach(&r, "sub", true).await;
    sub(&r, "sub", s.conn_id, &[("w/#", 1)]);
    let a = attach_v5(&r, "a", false, 1).await;
    sub(&r, "a", a.conn_id, &[("q", 1)]);
    r.detach("a", a.conn_id, ending(will("w/a", 60)));
    r.route(msg("q", b"", 1, false)).await;
    // No expiry task runs here: only the reconnect can notice.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = attach_v5(&r, "a", false, 1).await;
    assert!(!a.session_present);
    assert!(a.queue.pop().is_none());
    assert_eq!(r.stats.snapshot().expired, 1);
    // The session ended, so its will went out.
    assert_eq!(drain(&s.queue), [("w/a".to_string(), 1, false)]);
}

#[tokio::test]
async fn max_session_expiry_caps_what_clients_ask_for() {
    let mut r = Router::new(8, 100);
    r.max_session_expiry = 5;
    // A 3.1.1 persistent session would never expire; DISCONNECT cannot raise it past the cap.
    let a = attach_v5(&r, "a", false, NEVER).await;
    r.detach("a", a.conn_id, Detach::default());
    let b = attach_v5(&r, "b", false, 3).await;
    let end = Detach {
        expiry: Some(100),
        ..Detach::default()
    };
    r.detach("b", b.conn_id, end);
    r.sweep(after(4));
    assert!(r.has_session("a") && r.has_session("b"));
    r.sweep(after(6));
    assert!(!r.has_session("a") && !r.has_session("b"));
    assert_eq!(r.stats.snapshot().expired, 2);
}

#[tokio::test]
async fn delayed_will_expiry_counts_from_its_publication() {
    let r = Router::new(8, 100);
    let a = attach_v5(&r, "a", false, 100).await;
    let mut w = will("w/a", 5).unwrap();
    w.msg.props = Some(std::sync::Arc::new(crate::bus::MessageProps {
        expiry: Some(2),
        ..Default::default()
    }));
    // The session started its clock when it handed the will over, here 3 s ago: counted from
    // then, the will would be expired by the time its delay passes.
    let then = std::time::Instant::now() - Duration::from_secs(3);
    crate::bus::MessageProps::start_expiry(&mut w.msg.props, then);
    r.detach("a", a.conn_id, ending(Some(w)));
    let (wills, _) = r.sweep(after(6));
    let props = wills[0].props.as_ref().unwrap();
    let left = props.expiry_left(std::time::Instant::now());
    assert_eq!(left, Some(2));
}

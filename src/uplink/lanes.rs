//! What the uplink sends next after a (re)connect. Three lanes, in priority order:
//! 1. backlog alarms (status changes committed before the connect),
//! 2. live rows (committed after the connect), so current values are never stuck behind a
//!    backlog,
//! 3. backlog telemetry, replayed under a token-bucket rate limit.
//!
//! Within each lane rows go in commit order, so per device the live stream and the replay
//! stream are each in order; replayed payloads carry `"replay":true` so upstream can tell them
//! apart.

use std::collections::{HashSet, VecDeque};

use bytes::{BufMut, BytesMut};
use tokio::time::{Duration, Instant};

use crate::store::{Class, Row, Store, StoreError};

/// Outbox rows read per query.
const READ_AHEAD: usize = 500;

pub struct Lane {
    class: Option<Class>,
    /// Last id read; rows up to `upto` (or the newest committed, if `None`) belong here.
    fetched: i64,
    upto: Option<i64>,
    ready: VecDeque<Row>,
}

impl Lane {
    fn new(after: i64, upto: Option<i64>, class: Option<Class>) -> Lane {
        Lane {
            class,
            fetched: after,
            upto,
            ready: VecDeque::new(),
        }
    }

    fn limit(&self, newest: i64) -> i64 {
        self.upto.unwrap_or(newest)
    }

    pub fn exhausted(&self, newest: i64) -> bool {
        self.ready.is_empty() && self.fetched >= self.limit(newest)
    }

    async fn next(&mut self, store: &Store, newest: i64) -> Result<Option<Row>, StoreError> {
        if self.ready.is_empty() {
            let limit = self.limit(newest);
            if self.fetched >= limit {
                return Ok(None);
            }
            let rows = store
                .fetch_range(self.fetched, limit, self.class, READ_AHEAD)
                .await?;
            // Fewer than asked: nothing more of this lane exists up to `limit`.
            self.fetched = match rows.last() {
                Some(r) if rows.len() == READ_AHEAD => r.id,
                _ => limit,
            };
            self.ready.extend(rows);
        }
        Ok(self.ready.pop_front())
    }
}

/// Refills `rate` tokens per second up to one second's worth; `rate` 0 means unlimited.
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            tokens: rate.max(1) as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.rate.max(1.0));
        self.last = now;
    }

    /// Takes a token, or says when the next one is due.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        if self.rate == 0.0 {
            return Ok(());
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    pub fn give_back(&mut self) {
        if self.rate > 0.0 {
            self.tokens += 1.0;
        }
    }
}

/// Keeps the replay's share of the in-flight window small enough that a live reading handed
/// over now is acknowledged within `bound`: at most (acknowledgements per second x `bound`)
/// replayed messages are ever ahead of it. On a fast link that is the whole window; on a slow
/// cellular link it is what the link carries in `bound`.
pub struct ReplayWindow {
    bound: f64,
    in_flight: HashSet<i64>,
    /// Acknowledgements per second, smoothed; 0 until the first sample.
    rate: f64,
    acks: u32,
    since: Instant,
}

/// Replayed messages in flight before any acknowledgement rate is known.
const REPLAY_START: usize = 10;
/// Acknowledgements are counted over at least this long per rate sample.
const RATE_SAMPLE: Duration = Duration::from_millis(200);

impl ReplayWindow {
    pub fn new(bound: Duration, now: Instant) -> ReplayWindow {
        ReplayWindow {
            bound: bound.as_secs_f64(),
            in_flight: HashSet::new(),
            rate: 0.0,
            acks: 0,
            since: now,
        }
    }

    /// How many replayed messages may be in flight in a window of `window`.
    pub fn allowed(&self, window: usize) -> usize {
        let n = if self.rate == 0.0 {
            REPLAY_START
        } else {
            (self.rate * self.bound) as usize
        };
        n.clamp(1, window.max(1))
    }

    pub fn may_send(&self, window: usize) -> bool {
        self.in_flight.len() < self.allowed(window)
    }

    pub fn sent(&mut self, id: i64) {
        self.in_flight.insert(id);
    }

    /// Any row was acknowledged: it counts towards the rate, and frees a replay slot if it was one.
    pub fn acked(&mut self, id: i64, now: Instant) {
        self.in_flight.remove(&id);
        self.acks += 1;
        let dt = now.saturating_duration_since(self.since);
        if dt >= RATE_SAMPLE {
            let sample = self.acks as f64 / dt.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                sample
            } else {
                0.7 * self.rate + 0.3 * sample
            };
            self.acks = 0;
            self.since = now;
        }
    }

    /// A new connection: the link may be a different one, so the rate is learnt again.
    pub fn reset(&mut self, now: Instant) {
        *self = ReplayWindow::new(Duration::from_secs_f64(self.bound), now);
    }
}

/// Adds `"replay":true` to a JSON object payload; anything else is sent as it is.
pub fn mark_replay(payload: Vec<u8>) -> Vec<u8> {
    let end = payload.iter().rposition(|b| !b.is_ascii_whitespace());
    let start = payload.iter().position(|b| !b.is_ascii_whitespace());
    let (Some(start), Some(end)) = (start, end) else {
        return payload;
    };
    if payload[start] != b'{' || payload[end] != b'}' {
        return payload;
    }
    let empty = payload[start + 1..end].iter().all(u8::is_ascii_whitespace);
    let mut out = BytesMut::with_capacity(payload.len() + 16);
    out.put_slice(&payload[..end]);
    out.put_slice(if empty {
        b"\"replay\":true"
    } else {
        b",\"replay\":true"
    });
    out.put_slice(&payload[end..]);
    out.to_vec()
}

/// The three lanes of one connection.
pub struct Lanes {
    pub backlog_end: i64,
    alarms: Lane,
    live: Lane,
    replay: Lane,
    bucket: TokenBucket,
}

/// A row to send, and whether it is a replay.
pub struct Next {
    pub row: Row,
    pub replay: bool,
    lane: Which,
}

#[derive(Clone, Copy)]
enum Which {
    Alarms,
    Live,
    Replay,
}

impl Lanes {
    /// After a CONNACK: everything committed up to `newest` is backlog.
    pub fn new(newest: i64, replay_rate: u32, now: Instant) -> Lanes {
        Lanes {
            backlog_end: newest,
            alarms: Lane::new(0, Some(newest), Some(Class::Alarm)),
            live: Lane::new(newest, None, None),
            replay: Lane::new(0, Some(newest), Some(Class::Telemetry)),
            bucket: TokenBucket::new(replay_rate, now),
        }
    }

    pub fn backlog_done(&self) -> bool {
        self.alarms.exhausted(self.backlog_end) && self.replay.exhausted(self.backlog_end)
    }

    /// Puts a row that could not be sent back at the head of its lane, so it goes next.
    pub fn unread(&mut self, next: Next) {
        let lane = match next.lane {
            Which::Alarms => &mut self.alarms,
            Which::Live => &mut self.live,
            Which::Replay => {
                self.bucket.give_back();
                &mut self.replay
            }
        };
        lane.ready.push_front(next.row);
    }

    /// The next row by priority; `Err(at)` when only rate-limited replay is left, due at `at`.
    /// `replay_ok` false holds the replay back (its share of the window is full).
    pub async fn next(
        &mut self,
        store: &Store,
        newest: i64,
        now: Instant,
        replay_ok: bool,
    ) -> Result<Result<Option<Next>, Instant>, StoreError> {
        if let Some(row) = self.alarms.next(store, newest).await? {
            return Ok(Ok(Some(Next {
                row,
                replay: true,
                lane: Which::Alarms,
            })));
        }
        if let Some(row) = self.live.next(store, newest).await? {
            return Ok(Ok(Some(Next {
                row,
                replay: false,
                lane: Which::Live,
            })));
        }
        if !replay_ok || self.replay.exhausted(newest) {
            return Ok(Ok(None));
        }
        if let Err(at) = self.bucket.take(now) {
            return Ok(Err(at));
        }
        match self.replay.next(store, newest).await? {
            Some(row) => Ok(Ok(Some(Next {
                row,
                replay: true,
                lane: Which::Replay,
            }))),
            None => {
                self.bucket.give_back();
                Ok(Ok(None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_marker_goes_into_json_objects_only() {
        let m = |s: &str| String::from_utf8(mark_replay(s.as_bytes().to_vec())).unwrap();
        assert_eq!(
            m(r#"{"value":1,"seq":2}"#),
            r#"{"value":1,"seq":2,"replay":true}"#
        );
        assert_eq!(m("{}"), r#"{"replay":true}"#);
        assert_eq!(m(" { \"a\":1 }\n"), " { \"a\":1 ,\"replay\":true}\n");
        assert_eq!(m("online"), "online");
        assert_eq!(m("[1,2]"), "[1,2]");
        assert_eq!(m(""), "");
    }

    #[test]
    fn token_bucket_allows_one_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert!(b.take(t0).is_ok());
        }
        let due = b.take(t0).unwrap_err();
        assert_eq!(due - t0, Duration::from_millis(100));
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(150)).is_err());
        // Idle time does not bank more than a second's worth.
        let later = t0 + Duration::from_secs(60);
        let n = (0..100).take_while(|_| b.take(later).is_ok()).count();
        assert_eq!(n, 10);
    }

    #[test]
    fn replay_share_follows_what_the_link_acknowledges_within_the_bound() {
        let t0 = Instant::now();
        let mut w = ReplayWindow::new(Duration::from_millis(500), t0);
        assert_eq!(w.allowed(100), REPLAY_START, "before any rate is known");
        // A slow link: 40 acks/s -> 20 replayed messages may be ahead of a live one.
        for i in 0..8 {
            w.acked(i, t0 + Duration::from_millis(25 * (i as u64 + 1)));
        }
        assert_eq!(w.allowed(100), 20);
        // A fast link: capped by the window itself.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..10_000 {
            w.acked(i, t1 + Duration::from_micros(50 * i as u64));
        }
        assert_eq!(w.allowed(100), 100);
        w.sent(1);
        w.sent(2);
        w.acked(1, t1);
        assert!(w.in_flight.contains(&2) && !w.in_flight.contains(&1));
        w.reset(t1);
        assert_eq!(w.allowed(100), REPLAY_START);
        assert!(w.may_send(100));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, t0);
        assert!((0..10_000).all(|_| b.take(t0).is_ok()));
    }

    #[tokio::test]
    async fn a_row_put_back_goes_next_in_its_lane() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Duration::from_millis(5),
            crate::store::Caps::NONE,
        )
        .unwrap();
        for i in 1..=3u32 {
            let m = crate::store::Outgoing {
                topic: format!("s/g/d/{i}"),
                payload: bytes::Bytes::from(format!("{{\"seq\":{i}}}")),
                qos: 1,
                retain: false,
                class: Class::Telemetry,
                device: "d".into(),
                sample: None,
            };
            store.enqueue(m).await.unwrap();
        }
        store.flush().await.unwrap();
        let newest = *store.available().borrow();
        // All three are backlog, replayed at one a second: a row put back returns its token.
        let t0 = Instant::now();
        let mut lanes = Lanes::new(newest, 1, t0);
        let first = lanes
            .next(&store, newest, t0, true)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.row.topic, "s/g/d/1");
        lanes.unread(first);
        let again = lanes
            .next(&store, newest, t0, true)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(again.row.topic, "s/g/d/1", "the row put back goes first");
        assert!(
            lanes.next(&store, newest, t0, true).await.unwrap().is_err(),
            "no token left: the next row waits for the rate"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn alarms_then_live_then_replay_within_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Duration::from_millis(5),
            crate::store::Caps::NONE,
        )
        .unwrap();
        let msg = |i: u32, class: Class| crate::store::Outgoing {
            topic: format!("s/g/d/{i}"),
            payload: bytes::Bytes::from(format!("{{\"seq\":{i}}}")),
            qos: 1,
            retain: false,
            class,
            device: "d".into(),
            sample: None,
        };
        // Backlog: telemetry 1..=5 with an alarm after 3.
        for i in 1..=5 {
            store.enqueue(msg(i, Class::Telemetry)).await.unwrap();
            if i == 3 {
                store.enqueue(msg(100, Class::Alarm)).await.unwrap();
            }
        }
        store.flush().await.unwrap();
        let t0 = Instant::now();
        let newest = *store.available().borrow();
        let mut lanes = Lanes::new(newest, 2, t0);
        // Live rows arrive after the connect.
        for i in 6..=7 {
            store.enqueue(msg(i, Class::Telemetry)).await.unwrap();
        }
        store.flush().await.unwrap();
        let newest = *store.available().borrow();
        let mut order = Vec::new();
        let mut now = t0;
        while order.len() < 8 {
            match lanes.next(&store, newest, now, true).await.unwrap() {
                Ok(Some(n)) => order.push((
                    n.row.topic.rsplit('/').next().unwrap().to_string(),
                    n.replay,
                )),
                Ok(None) => break,
                Err(at) => now = at,
            }
        }
        let got: Vec<(&str, bool)> = order.iter().map(|(t, r)| (t.as_str(), *r)).collect();
        assert_eq!(
            got,
            [
                ("100", true),
                ("6", false),
                ("7", false),
                ("1", true),
                ("2", true),
                ("3", true),
                ("4", true),
                ("5", true)
            ]
        );
        assert!(
            now >= t0 + Duration::from_millis(1400),
            "5 replays at 2/s after a 2-token burst"
        );
        assert!(lanes.backlog_done());
        store.close().await;
    }
}

//! The next commit's batch: messages handed to the store and not yet written. The uplink reads
//! them from here as it reads committed rows from the database (write-behind), and a message
//! that upstream acknowledges while it is still here leaves the batch and is never written.

use super::{db::Row, Class, Committed, Outgoing};

/// A message waiting for its commit, and who to tell when it is on disk (or acknowledged
/// upstream, whichever comes first).
pub(super) struct Queued {
    /// Its row id, given when it was handed over, so it can be sent before it is written.
    pub(super) id: i64,
    /// Unix milliseconds when it was handed over, and the same on the monotonic clock.
    pub(super) created_ms: i64,
    pub(super) at: std::time::Instant,
    pub(super) msg: Outgoing,
    pub(super) committed: Option<Committed>,
}

impl Queued {
    fn row(&self) -> Row {
        Row {
            id: self.id,
            topic: self.msg.topic.clone(),
            payload: self.msg.payload.to_vec(),
            qos: self.msg.qos,
            retain: self.msg.retain,
            class: self.msg.class,
            device: self.msg.device.clone(),
            created_ms: self.created_ms,
        }
    }
}

/// Ascending by id outside [`super::writer::Writer::commit`] (which may write alarms first and
/// restores the order for what is left).
pub(super) type Batch = Vec<Queued>;

/// The messages of `batch` with `after < id <= upto`, of `class` if given, at most `limit`,
/// oldest first.
pub(super) fn range(
    batch: &Batch,
    after: i64,
    upto: i64,
    class: Option<Class>,
    limit: usize,
) -> Vec<Row> {
    let start = batch.partition_point(|q| q.id <= after);
    batch[start..]
        .iter()
        .take_while(|q| q.id <= upto)
        .filter(|q| class.is_none_or(|c| q.msg.class == c))
        .take(limit)
        .map(Queued::row)
        .collect()
}

/// Takes message `id` out of `batch`, if it is there.
pub(super) fn take(batch: &mut Batch, id: i64) -> Option<Queued> {
    let i = batch.binary_search_by_key(&id, |q| q.id).ok()?;
    Some(batch.remove(i))
}

/// Both lists ascending by id: the first `limit` of their union.
pub(super) fn merge(written: Vec<Row>, pending: Vec<Row>, limit: usize) -> Vec<Row> {
    if pending.is_empty() {
        return written;
    }
    if written.is_empty() {
        return pending;
    }
    let mut out = Vec::with_capacity(limit.min(written.len() + pending.len()));
    let (mut a, mut b) = (
        written.into_iter().peekable(),
        pending.into_iter().peekable(),
    );
    while out.len() < limit {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.id <= y.id => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn queued(id: i64, class: Class) -> Queued {
        Queued {
            id,
            created_ms: 0,
            at: std::time::Instant::now(),
            msg: Outgoing {
                topic: format!("t/{id}"),
                payload: Bytes::from(id.to_string()),
                qos: 1,
                retain: false,
                class,
                device: String::new(),
                sample: None,
            },
            committed: None,
        }
    }

    fn ids(rows: &[Row]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn a_range_of_the_batch_is_bounded_by_ids_class_and_limit() {
        let b: Batch = (1..=6)
            .map(|i| {
                queued(
                    i,
                    if i == 4 {
                        Class::Alarm
                    } else {
                        Class::Telemetry
                    },
                )
            })
            .collect();
        assert_eq!(ids(&range(&b, 1, 5, None, 10)), [2, 3, 4, 5]);
        assert_eq!(ids(&range(&b, 0, 6, Some(Class::Alarm), 10)), [4]);
        assert_eq!(ids(&range(&b, 0, 6, Some(Class::Telemetry), 3)), [1, 2, 3]);
        assert!(range(&b, 6, 9, None, 10).is_empty());
    }

    #[test]
    fn taking_a_message_keeps_the_rest_in_order() {
        let mut b: Batch = (1..=4).map(|i| queued(i, Class::Telemetry)).collect();
        assert_eq!(take(&mut b, 2).map(|q| q.id), Some(2));
        assert!(take(&mut b, 2).is_none());
        assert_eq!(b.iter().map(|q| q.id).collect::<Vec<_>>(), [1, 3, 4]);
    }

    #[test]
    fn written_and_pending_rows_merge_by_id_up_to_the_limit() {
        let rows = |v: &[i64]| -> Vec<Row> {
            v.iter()
                .map(|&i| queued(i, Class::Telemetry).row())
                .collect()
        };
        assert_eq!(
            ids(&merge(rows(&[1, 4, 5]), rows(&[2, 3, 6]), 10)),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(ids(&merge(rows(&[1, 4]), rows(&[2, 3]), 3)), [1, 2, 3]);
        assert_eq!(ids(&merge(rows(&[]), rows(&[7]), 3)), [7]);
    }
}

//! Statistics: per-minute buckets per queue and task, and the recent failures.
//!
//! A bucket is one hash per queue and minute, `<task>:<field>` → count, added to with
//! `HINCRBY` (only the fields that are not zero), expiring the statistics window after
//! its minute; a set per queue remembers which minutes have one, so reading them back
//! never guesses a range of minutes. Writes are one pipeline per batch.

use std::collections::BTreeMap;
use std::time::Duration;

use machinery_core::Result as CoreResult;
use machinery_core::inspect::{HISTOGRAM_BOUNDS_MS, StatsBucket};
use uuid::Uuid;

use super::inspect::now_ms;
use super::{RedisBroker, millis};
use crate::error::Error;

/// Failures kept per queue: the newest.
pub(crate) const MAX_FAILED: u64 = 10_000;

/// Buckets read per pipeline.
const READS_PER_PIPELINE: usize = 1_000;

const MINUTE_MS: u64 = 60_000;

/// The counters of a bucket that are not histograms, by field name.
fn counters(b: &StatsBucket) -> [(&'static str, u64); 6] {
    [
        ("processed", b.processed),
        ("failed", b.failed),
        ("retried", b.retried),
        ("dead", b.dead),
        ("run_sum", b.run_ms_sum),
        ("wait_sum", b.wait_ms_sum),
    ]
}

/// Adds the field `name` (`<task>:<field>`, see the module docs) of `value` to `b`;
/// unknown fields are ignored.
fn add_field(b: &mut StatsBucket, field: &str, value: u64) {
    let histogram = |h: &mut Vec<u64>, i: usize| {
        // One bucket past the bounds (+Inf); a larger index is not ours.
        if i > HISTOGRAM_BOUNDS_MS.len() {
            return;
        }
        if h.len() <= i {
            h.resize(i + 1, 0);
        }
        h[i] += value;
    };
    match field {
        "processed" => b.processed += value,
        "failed" => b.failed += value,
        "retried" => b.retried += value,
        "dead" => b.dead += value,
        "run_sum" => b.run_ms_sum += value,
        "wait_sum" => b.wait_ms_sum += value,
        _ => match field.split_once(':') {
            Some(("run", i)) => {
                if let Ok(i) = i.parse() {
                    histogram(&mut b.run_ms, i);
                }
            }
            Some(("wait", i)) => {
                if let Ok(i) = i.parse() {
                    histogram(&mut b.wait_ms, i);
                }
            }
            _ => {}
        },
    }
}

/// Splits a stored field name into the task and its field: the task name may hold
/// colons itself (`module::task`), the field is the last part, or the last two for a
/// histogram bucket (`run:3`).
fn split_field(name: &str) -> Option<(&str, &str)> {
    let (head, last) = name.rsplit_once(':')?;
    if last.bytes().all(|b| b.is_ascii_digit()) {
        let (task, kind) = head.rsplit_once(':')?;
        let field = &name[task.len() + 1..];
        return matches!(kind, "run" | "wait").then_some((task, field));
    }
    Some((head, last))
}

impl RedisBroker {
    /// Adds `buckets` to the stored ones, in one pipeline.
    pub(crate) async fn add_stats(
        &self,
        buckets: &[StatsBucket],
        window: Duration,
    ) -> CoreResult<()> {
        let keys = &self.engine.keys;
        let window_ms = millis(window);
        let now = now_ms();
        let mut pipe = redis::pipe();
        let mut queues: Vec<&str> = Vec::new();
        for b in buckets {
            let expire_at = (b.minute * MINUTE_MS).saturating_add(window_ms);
            if expire_at <= now {
                continue;
            }
            let key = keys.stats(&b.queue, b.minute);
            let mut fields: Vec<(String, u64)> = counters(b)
                .into_iter()
                .map(|(f, v)| (format!("{}:{f}", b.task), v))
                .collect();
            for (kind, h) in [("run", &b.run_ms), ("wait", &b.wait_ms)] {
                for (i, v) in h.iter().enumerate() {
                    fields.push((format!("{}:{kind}:{i}", b.task), *v));
                }
            }
            let mut wrote = false;
            for (field, v) in fields.into_iter().filter(|(_, v)| *v > 0) {
                pipe.cmd("HINCRBY").arg(&key).arg(field).arg(v).ignore();
                wrote = true;
            }
            if !wrote {
                continue;
            }
            pipe.cmd("PEXPIREAT").arg(&key).arg(expire_at).ignore();
            pipe.cmd("ZADD")
                .arg(keys.stats_minutes(&b.queue))
                .arg(b.minute)
                .arg(b.minute)
                .ignore();
            if !queues.contains(&b.queue.as_str()) {
                queues.push(&b.queue);
            }
        }
        if queues.is_empty() {
            return Ok(());
        }
        // Minutes past the window are forgotten; the set itself outlives its last
        // minute by the window.
        let oldest = now.saturating_sub(window_ms) / MINUTE_MS;
        for q in queues.iter().copied() {
            let minutes = keys.stats_minutes(q);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&minutes)
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&minutes)
                .arg(window_ms.saturating_add(MINUTE_MS))
                .ignore();
        }
        // A queue with statistics is a queue `queues()` and `stats(_, None)` list, even
        // when this client never published to it (one key per command: cluster-safe).
        for q in &queues {
            pipe.cmd("SADD").arg(keys.queues()).arg(*q).ignore();
        }
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// Records failures for the `Failed` listing: per queue a set scored by when,
    /// trimmed to the window and to the newest [`MAX_FAILED`]; one pipeline.
    pub(crate) async fn add_failures(
        &self,
        failures: &[(String, Uuid, u64)],
        window: Duration,
    ) -> CoreResult<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let keys = &self.engine.keys;
        let window_ms = millis(window);
        let oldest = now_ms().saturating_sub(window_ms);
        let mut by_queue: BTreeMap<&str, Vec<(u64, String)>> = BTreeMap::new();
        for (queue, uuid, at) in failures {
            if *at >= oldest {
                by_queue
                    .entry(queue)
                    .or_default()
                    .push((*at, uuid.to_string()));
            }
        }
        if by_queue.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (queue, entries) in by_queue {
            let key = keys.failed(queue);
            pipe.cmd("ZADD").arg(&key).arg(entries).ignore();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore();
            pipe.cmd("ZREMRANGEBYRANK")
                .arg(&key)
                .arg(0)
                .arg(-i64::try_from(MAX_FAILED).unwrap_or(i64::MAX) - 1)
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(window_ms.max(1)).ignore();
        }
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// The stored buckets from `since_minute` on, of `queue` or of every queue, by
    /// minute, queue and task: two round trips (the minutes of each queue, then their
    /// buckets, pipelined), bounded by the window the buckets were written with.
    pub(crate) async fn read_stats(
        &self,
        since_minute: u64,
        queue: Option<&str>,
    ) -> CoreResult<Vec<StatsBucket>> {
        let keys = &self.engine.keys;
        let queues: Vec<String> = match queue {
            Some(q) => vec![q.to_owned()],
            None => redis::cmd("SMEMBERS")
                .arg(keys.queues())
                .query_async(&mut self.conn())
                .await
                .map_err(Error::from)?,
        };
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for q in &queues {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(keys.stats_minutes(q))
                .arg(since_minute)
                .arg("+inf");
        }
        let minutes: Vec<Vec<u64>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        let wanted: Vec<(&str, u64)> = queues
            .iter()
            .zip(&minutes)
            .flat_map(|(q, ms)| ms.iter().map(move |m| (q.as_str(), *m)))
            .collect();
        let mut buckets: BTreeMap<(u64, String, String), StatsBucket> = BTreeMap::new();
        for chunk in wanted.chunks(READS_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            for (q, m) in chunk {
                pipe.cmd("HGETALL").arg(keys.stats(q, *m));
            }
            let hashes: Vec<Vec<(String, u64)>> = pipe
                .query_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
            for ((q, m), fields) in chunk.iter().zip(hashes) {
                for (name, value) in fields {
                    let Some((task, field)) = split_field(&name) else {
                        continue;
                    };
                    let bucket = buckets
                        .entry((*m, (*q).to_owned(), task.to_owned()))
                        .or_insert_with(|| StatsBucket::new(*m, *q, task));
                    add_field(bucket, field, value);
                }
            }
        }
        Ok(buckets.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_split_at_the_right_colon() {
        assert_eq!(split_field("add:processed"), Some(("add", "processed")));
        assert_eq!(split_field("m::add:run:3"), Some(("m::add", "run:3")));
        assert_eq!(split_field("x:run:wait:14"), Some(("x:run", "wait:14")));
        assert_eq!(split_field("x:run:processed"), Some(("x:run", "processed")));
        assert_eq!(split_field("x:other:3"), None);
        assert_eq!(split_field("nocolon"), None);
    }

    #[test]
    fn fields_add_up_into_a_bucket() {
        let mut b = StatsBucket::new(1, "q", "t");
        add_field(&mut b, "processed", 2);
        add_field(&mut b, "run:3", 5);
        add_field(&mut b, "run:3", 1);
        add_field(&mut b, "wait:14", 1);
        add_field(&mut b, "wait:40", 1);
        add_field(&mut b, "nonsense", 9);
        assert_eq!(b.processed, 2);
        assert_eq!(b.run_ms[3], 6);
        assert_eq!(b.wait_ms.len(), HISTOGRAM_BOUNDS_MS.len() + 1);
        assert_eq!(b.wait_ms[14], 1);
    }
}

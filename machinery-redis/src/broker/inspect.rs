//! The inspect side of the admin plane: queue counts, paged task listings and finding
//! one task's message by UUID.

use std::time::{SystemTime, UNIX_EPOCH};

use machinery_core::RawSignature;
use machinery_core::inspect::{ListedTask, Page, QueueInfo, TaskList};
use machinery_core::{Result as CoreResult, engine::DeadLetter};
use redis::Value;
use uuid::Uuid;

use super::RedisBroker;
use super::cursor::{self, Cursor, fnv1a};
use super::reply::{bytes, int, parse_dead, text};
use crate::error::Error;
use crate::scripts::{After, DeadAction, DeadOneArgs, FindArgs, PageArgs, PagedSet};

/// Most items one page holds, whatever is asked: a page is one script call, and its
/// reply is held whole by Redis and by the client.
pub(crate) const MAX_PAGE: usize = 1_000;

/// Payload hash fields (or dead letters) one `find.lua` (`dead_one.lua`) call looks
/// at: a few milliseconds of Redis's time, so other clients are served in between.
pub(super) const SCAN_BUDGET: usize = 5_000;

/// Queues counted per pipeline by `queues`.
const QUEUES_PER_PIPELINE: usize = 500;

/// Pages of failures read to fill one page when failures whose state expired are left
/// out, before a short page is returned (its cursor continues the walk).
const FAILED_ROUNDS: usize = 8;

/// The UUID of an envelope, read from its first field without decoding the rest (the
/// layout `find.lua` matches); a payload of another layout is decoded whole, and one
/// that is not a message has none.
pub(crate) fn peek_uuid(payload: &[u8]) -> Option<Uuid> {
    let rest = match payload {
        [1, 0x80..=0x8f, rest @ ..] | [1, 0xde, _, _, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        [0xa4, b'u', b'u', b'i', b'd', 0xc4, 16, id @ ..] if id.len() >= 16 => {
            Uuid::from_slice(&id[..16]).ok()
        }
        _ => RawSignature::decode(payload).ok().map(|s| s.uuid),
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A score as Redis formats it, as whole milliseconds.
fn score_ms(score: &str) -> Option<u64> {
    let s: f64 = score.parse().ok()?;
    // Scores here are times in ms, whole numbers well inside f64's exact range.
    (s.is_finite() && s >= 0.0).then_some(s as u64)
}

/// One row of `page.lua`'s reply.
struct Row {
    member: Vec<u8>,
    score: String,
    payload: Option<Vec<u8>>,
    count: u32,
}

/// `page.lua`'s reply: whether more rows follow, and the rows.
fn rows(reply: &[Value]) -> Result<(bool, Vec<Row>), Error> {
    let more = reply.first().and_then(int) == Some(1);
    let mut out = Vec::with_capacity(reply.len().saturating_sub(1) / 4);
    for chunk in reply.get(1..).unwrap_or_default().chunks(4) {
        let [member, score, payload, count] = chunk else {
            return Err(Error::Protocol("page returned a partial entry".into()));
        };
        let (Some(member), Some(score)) = (bytes(member), text(score)) else {
            return Err(Error::Protocol("page returned a malformed entry".into()));
        };
        out.push(Row {
            member,
            score,
            payload: bytes(payload),
            count: int(count).and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
        });
    }
    Ok((more, out))
}

impl RedisBroker {
    /// Every queue published to or paused, sorted, with its counts: a delayed message
    /// whose ETA has passed counts as ready (as in `depth`).
    pub(crate) async fn list_queues(&self) -> CoreResult<Vec<QueueInfo>> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.engine.keys.queues())
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.server_ms().await?;
        let keys = &self.engine.keys;
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(QUEUES_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            for q in chunk {
                let delayed = keys.delayed(q);
                pipe.cmd("ZCARD").arg(keys.ready(q));
                pipe.cmd("ZCARD").arg(&delayed);
                pipe.cmd("ZCOUNT").arg(&delayed).arg("-inf").arg(now);
                // Not the member '~' (score +inf) that keeps the set alive (fetch.lua).
                pipe.cmd("ZCOUNT")
                    .arg(keys.inflight(q))
                    .arg("-inf")
                    .arg("(+inf");
                pipe.cmd("LLEN").arg(keys.dead(q));
                pipe.cmd("EXISTS").arg(keys.paused(q));
            }
            let counts: Vec<u64> = pipe
                .query_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
            for (q, c) in chunk.iter().zip(counts.chunks(6)) {
                let [ready, delayed, due, in_flight, dead, paused] = c else {
                    return Err(Error::Protocol("a short reply to queue counts".into()).into());
                };
                out.push(QueueInfo {
                    name: q.clone(),
                    ready: ready + due,
                    delayed: delayed.saturating_sub(*due),
                    in_flight: *in_flight,
                    dead: *dead,
                    paused: *paused == 1,
                });
            }
        }
        Ok(out)
    }

    /// One page of `list` in `queue` (see `BrokerAdmin::tasks`), at most [`MAX_PAGE`]
    /// items.
    pub(crate) async fn list_tasks(
        &self,
        queue: &str,
        list: TaskList,
        cursor: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page<ListedTask>> {
        let limit = limit.clamp(1, MAX_PAGE);
        let at = cursor.map(|c| cursor::decode(list, queue, c)).transpose()?;
        let set = match list {
            TaskList::Pending => PagedSet::Ready,
            TaskList::Delayed => PagedSet::Delayed,
            TaskList::InFlight => PagedSet::InFlight,
            TaskList::Dead => return self.dead_page(queue, at, limit).await,
            TaskList::Failed => return self.failed_page(queue, at, limit).await,
        };
        let (more, rows) = self.page(queue, set, at.as_ref(), limit).await?;
        let next = match (more, rows.last()) {
            (true, Some(last)) => Some(cursor::encode(
                list,
                queue,
                &Cursor::After {
                    score: last.score.clone(),
                    member: last.member.clone(),
                },
            )),
            _ => None,
        };
        let items = rows
            .into_iter()
            .filter_map(|row| {
                let payload = match (row.payload, set) {
                    (Some(p), _) => p,
                    // A receipt is no message: its payload vanished (settled meanwhile).
                    (None, PagedSet::InFlight) => return None,
                    // A member pushed by something else: fetch delivers it as the payload.
                    (None, _) => row.member,
                };
                let mut t = ListedTask::new(queue, payload);
                t.uuid = peek_uuid(&t.payload);
                t.deliveries = row.count;
                match set {
                    PagedSet::Delayed => t.eta = score_ms(&row.score),
                    PagedSet::InFlight => t.lease_deadline = score_ms(&row.score),
                    _ => {}
                }
                Some(t)
            })
            .collect();
        Ok(Page { items, next })
    }

    /// One `page.lua` call.
    async fn page(
        &self,
        queue: &str,
        set: PagedSet,
        at: Option<&Cursor>,
        limit: usize,
    ) -> CoreResult<(bool, Vec<Row>)> {
        let after = match at {
            Some(Cursor::After { score, member }) => Some(After {
                score,
                member: member.as_slice(),
            }),
            _ => None,
        };
        let args = PageArgs {
            queue,
            set,
            after,
            limit,
        };
        let reply: Vec<Value> = args
            .invocation(&self.engine.scripts, &self.engine.keys)
            .invoke_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(rows(&reply)?)
    }

    /// A page of dead letters, oldest first. The cursor is an index into the list with
    /// the hash of the entry before it: when entries before the cursor were removed
    /// meanwhile (requeued, deleted), the page starts after that entry, found again
    /// within the [`MAX_PAGE`] entries before its old place; when it is gone itself, the
    /// page starts [`MAX_PAGE`] entries earlier, and may repeat some.
    async fn dead_page(
        &self,
        queue: &str,
        at: Option<Cursor>,
        limit: usize,
    ) -> CoreResult<Page<ListedTask>> {
        let key = self.engine.keys.dead(queue);
        let mut conn = self.conn();
        let mut start = 0;
        let mut entries: Option<Vec<Vec<u8>>> = None;
        if let Some(Cursor::At { index, last }) = at {
            let before = index.checked_sub(1);
            let (seen, page): (Option<Vec<u8>>, Vec<Vec<u8>>) = redis::pipe()
                .cmd("LINDEX")
                .arg(&key)
                .arg(before.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)))
                .cmd("LRANGE")
                .arg(&key)
                .arg(index)
                .arg(index.saturating_add(limit as u64))
                .query_async(&mut conn)
                .await
                .map_err(Error::from)?;
            start = index;
            let moved = before.is_some() && seen.as_deref().map(fnv1a) != Some(last);
            if moved {
                let from = index.saturating_sub(1 + MAX_PAGE as u64);
                let window: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(from)
                    .arg(index.saturating_sub(1))
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::from)?;
                start = match window.iter().rposition(|e| fnv1a(e) == last) {
                    Some(p) => from + p as u64 + 1,
                    None => from,
                };
            } else {
                entries = Some(page);
            }
        }
        let mut entries = match entries {
            Some(e) => e,
            None => redis::cmd("LRANGE")
                .arg(&key)
                .arg(start)
                .arg(start.saturating_add(limit as u64))
                .query_async(&mut conn)
                .await
                .map_err(Error::from)?,
        };
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = match (more, entries.last()) {
            (true, Some(last)) => Some(cursor::encode(
                TaskList::Dead,
                queue,
                &Cursor::At {
                    index: start + entries.len() as u64,
                    last: fnv1a(last),
                },
            )),
            _ => None,
        };
        let items = entries
            .iter()
            .map(|raw| dead_item(parse_dead(queue, raw)))
            .collect();
        Ok(Page { items, next })
    }

    /// A page of recent failures, newest first, without those whose state is gone:
    /// checked with the state keys when the states are kept with the queues (the result
    /// backend is this broker's server), else by age (the results TTL from the failure).
    /// Failures found gone are dropped from the set.
    async fn failed_page(
        &self,
        queue: &str,
        at: Option<Cursor>,
        limit: usize,
    ) -> CoreResult<Page<ListedTask>> {
        let mut at = at;
        let mut items = Vec::new();
        let ttl = self.engine.ttl_ms();
        let config = &self.engine.config;
        let states_here = config.result_backend_url() == config.broker;
        for _ in 0..FAILED_ROUNDS {
            let (more, rows) = self
                .page(queue, PagedSet::Failed, at.as_ref(), limit - items.len())
                .await?;
            if let Some(last) = rows.last() {
                at = Some(Cursor::After {
                    score: last.score.clone(),
                    member: last.member.clone(),
                });
            }
            let found: Vec<(Uuid, u64, Vec<u8>)> = rows
                .into_iter()
                .filter_map(|r| {
                    let uuid = std::str::from_utf8(&r.member).ok()?.parse().ok()?;
                    Some((uuid, score_ms(&r.score)?, r.member))
                })
                .collect();
            let alive: Vec<bool> = if found.is_empty() {
                Vec::new()
            } else if states_here {
                let mut pipe = redis::pipe();
                for (uuid, _, _) in &found {
                    pipe.cmd("EXISTS").arg(self.engine.keys.state(queue, *uuid));
                }
                pipe.query_async(&mut self.conn())
                    .await
                    .map_err(Error::from)?
            } else {
                let now = now_ms();
                found
                    .iter()
                    .map(|(_, at, _)| ttl == 0 || at.saturating_add(ttl) > now)
                    .collect()
            };
            let gone: Vec<&Vec<u8>> = found
                .iter()
                .zip(&alive)
                .filter(|(_, a)| !**a)
                .map(|((_, _, m), _)| m)
                .collect();
            if !gone.is_empty() {
                let _: i64 = redis::cmd("ZREM")
                    .arg(self.engine.keys.failed(queue))
                    .arg(gone)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(Error::from)?;
            }
            for ((uuid, failed_at, _), alive) in found.into_iter().zip(alive) {
                if alive {
                    let mut t = ListedTask::new(queue, Vec::new());
                    t.uuid = Some(uuid);
                    t.failed_at = Some(failed_at);
                    items.push(t);
                }
            }
            if !more {
                return Ok(Page { items, next: None });
            }
            if items.len() >= limit {
                break;
            }
        }
        let next = at.map(|c| cursor::encode(TaskList::Failed, queue, &c));
        Ok(Page { items, next })
    }

    /// The message of task `uuid` in `queue`: its payload hash is walked (HSCAN, in
    /// calls of [`SCAN_BUDGET`] fields), then its dead letters.
    pub(crate) async fn find_task(
        &self,
        queue: &str,
        uuid: Uuid,
    ) -> CoreResult<Option<(TaskList, ListedTask)>> {
        let mut cursor = "0".to_owned();
        loop {
            let args = FindArgs {
                queue,
                cursor: &cursor,
                budget: SCAN_BUDGET,
                uuid,
                delete: false,
            };
            let reply: Vec<Value> = args
                .invocation(&self.engine.scripts, &self.engine.keys)
                .invoke_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
            let (next, found) = found_rows(&reply)?;
            for f in found {
                let list = match f.place.as_str() {
                    "ready" => TaskList::Pending,
                    "delayed" => TaskList::Delayed,
                    "inflight" => TaskList::InFlight,
                    _ => continue,
                };
                if peek_uuid(&f.payload) != Some(uuid) {
                    continue;
                }
                let mut t = ListedTask::new(queue, f.payload);
                t.uuid = Some(uuid);
                t.deliveries = f.count;
                match list {
                    TaskList::Delayed => t.eta = f.score.as_deref().and_then(score_ms),
                    TaskList::InFlight => t.lease_deadline = f.score.as_deref().and_then(score_ms),
                    _ => {}
                }
                return Ok(Some((list, t)));
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(self
            .dead_one(queue, uuid, DeadAction::Find)
            .await?
            .map(|raw| (TaskList::Dead, dead_item(parse_dead(queue, &raw)))))
    }

    /// Walks the dead letters of `queue` for task `uuid`'s, doing `action` to the first
    /// found; returns its entry.
    pub(super) async fn dead_one(
        &self,
        queue: &str,
        uuid: Uuid,
        action: DeadAction,
    ) -> CoreResult<Option<Vec<u8>>> {
        let mut start = 0;
        loop {
            let args = DeadOneArgs {
                queue,
                action,
                start,
                budget: SCAN_BUDGET,
                uuid,
            };
            let (next, _, entry): (i64, i64, Option<Vec<u8>>) = args
                .invocation(&self.engine.scripts, &self.engine.keys)
                .invoke_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
            if entry.is_some() {
                return Ok(entry);
            }
            match u64::try_from(next) {
                Ok(n) => start = n,
                Err(_) => return Ok(None),
            }
        }
    }
}

/// A dead letter as listed.
fn dead_item(d: DeadLetter) -> ListedTask {
    let mut t = ListedTask::new(d.queue, d.payload);
    t.uuid = peek_uuid(&t.payload);
    t.reason = Some(d.reason);
    t
}

/// One match in `find.lua`'s reply.
pub(super) struct Found {
    pub(super) payload: Vec<u8>,
    pub(super) place: String,
    pub(super) score: Option<String>,
    pub(super) count: u32,
}

/// `find.lua`'s reply: the next HSCAN cursor and the matches.
pub(super) fn found_rows(reply: &[Value]) -> Result<(String, Vec<Found>), Error> {
    let next = reply
        .first()
        .and_then(text)
        .ok_or_else(|| Error::Protocol("find returned no cursor".into()))?;
    let mut out = Vec::new();
    for chunk in reply.get(1..).unwrap_or_default().chunks(5) {
        let [_, payload, place, score, count] = chunk else {
            return Err(Error::Protocol("find returned a partial entry".into()));
        };
        let (Some(payload), Some(place)) = (bytes(payload), text(place)) else {
            return Err(Error::Protocol("find returned a malformed entry".into()));
        };
        out.push(Found {
            payload,
            place,
            score: text(score),
            count: int(count).and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
        });
    }
    Ok((next, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripts::uuid_needle;

    fn envelope(uuid: Uuid, headers: usize) -> Vec<u8> {
        let mut raw = RawSignature::new("add", vec![0x90]);
        raw.uuid = uuid;
        for i in 0..headers {
            raw.headers.insert(format!("h{i}"), "v".into());
        }
        // Enough fields for a map of 16 or more: a 3-byte map header.
        if headers > 0 {
            raw.eta = Some(1);
            raw.group_uuid = Some(Uuid::nil());
            raw.group_task_count = 1;
            raw.group_index = 1;
            raw.priority = 1;
            raw.immutable = true;
            raw.retry_count = 1;
            raw.retry_timeout = 1;
            raw.retried = 1;
            raw.chord = true;
            raw.ignore_when_not_registered = true;
        }
        raw.encode().unwrap()
    }

    /// `find.lua` and `dead_one.lua` compare bytes at a fixed place: the envelope must
    /// start with its `uuid` field, a 16-byte `bin`, after a 1- or 3-byte map header.
    #[test]
    fn the_uuid_is_where_the_scripts_look() {
        let uuid = Uuid::new_v4();
        let needle = uuid_needle(uuid);
        let small = envelope(uuid, 0);
        assert_eq!(small[3 - 1..3 - 1 + needle.len()], needle[..]);
        let big = envelope(uuid, 2);
        assert_eq!(big[1], 0xde, "expected a map of 16 fields or more");
        assert_eq!(big[5 - 1..5 - 1 + needle.len()], needle[..]);
        assert_eq!(peek_uuid(&small), Some(uuid));
        assert_eq!(peek_uuid(&big), Some(uuid));
        assert_eq!(peek_uuid(b"not a message"), None);
        assert_eq!(peek_uuid(&[]), None);
    }

    #[test]
    fn scores_read_as_milliseconds() {
        assert_eq!(score_ms("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(score_ms("inf"), None);
        assert_eq!(score_ms("x"), None);
    }
}

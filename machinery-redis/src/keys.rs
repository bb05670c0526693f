//! Every Redis key name, in one place: the table below is the layout, [`Keys`] builds
//! it, and the scripts get every key they touch from here (in `KEYS`, through the
//! encoders in `scripts.rs`). A unit test checks this table, the crate docs' copy and
//! the Lua scripts against [`Keys`].
//!
//! Every key of a queue, the states of the tasks sent to it and the chords whose
//! callback goes to it share the queue's hash tag `{q:<queue>}`: one Redis Cluster slot
//! per queue, so each script and multi-key command works within one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{q:<queue>}:ready` | zset | ids ready to deliver (score: priority, then age; the rule is `ready_score` in `lua/lib.lua`) |
//! | `<p>:{q:<queue>}:delayed` | zset | ids waiting for their ETA (score: ETA, ms) |
//! | `<p>:{q:<queue>}:inflight` | zset | deliveries not settled, as `<id>/<lease token>` (score: lease deadline, ms); a delivery is held while its member is there; `~` (score +inf) keeps the set, and its skip-list encoding, when nothing is in flight |
//! | `<p>:{q:<queue>}:msg` | hash | id → payload |
//! | `<p>:{q:<queue>}:count` | hash | id → deliveries that ended unsettled (lease expired, released); most messages have none |
//! | `<p>:{q:<queue>}:seq` | string | message id counter |
//! | `<p>:{q:<queue>}:lease_seq` | string | lease token counter |
//! | `<p>:{q:<queue>}:dead` | list | dead letters: `<reason length>:<reason><payload>` |
//! | `<p>:{q:<queue>}:state:<uuid>` | string | the state (MessagePack) of a task sent to the queue: no TTL while PENDING, RECEIVED, STARTED or RETRY; the results TTL from the write of its SUCCESS, FAILURE or REVOKED, which no non-final write replaces (nor a SUCCESS or FAILURE a REVOKED: only a new send does) |
//! | `<p>:{q:<queue>}:progress:<uuid>` | string | the last progress value (MessagePack) a task sent to the queue reported (`TaskContext::set_progress`), written at most once per `progress_interval` while it runs; the results TTL from each write (none when results are kept forever) |
//! | `<p>:{q:<queue>}:chord:<group>` | hash | a chord whose callback goes to the queue: count, callback payload, priority, fired, failure; no TTL until the callback's state is final, then the results TTL |
//! | `<p>:{q:<queue>}:chord:<group>:results` | hash | member index → encoded result; expires with the chord's hash |
//! | `<p>:{q:<queue>}:unique:<key>` | string | a unique task's lock: the UUID of the task that holds it, with the lock's TTL (PX); deleted when that task reaches its final state (unless it keeps the lock until the TTL) |
//! | `<p>:{q:<queue>}:paused` | string | `1` while the queue is paused: fetch hands out nothing from it (checked by `fetch.lua`) |
//! | `<p>:{q:<queue>}:failed` | zset | task UUIDs that ended in FAILURE (score: when, ms); at most 10,000, none older than the statistics window |
//! | `<p>:{q:<queue>}:stats` | zset | the minutes that have a statistics bucket (member and score: the minute, ms / 60,000) |
//! | `<p>:{q:<queue>}:stats:<minute>` | hash | one minute's statistics: `<task>:<field>` → count (`processed`, `failed`, `retried`, `dead`, `run_sum`, `run:<bucket>`, `wait_sum`, `wait:<bucket>`); expires the statistics window after its minute |
//! | `<p>:{wake}:<queue>` | list | wake-up tokens for the queue's blocked workers (at most 16); one slot for all queues, so a worker blocks on all its queues in one `BLPOP` |
//! | `<p>:queues` | set | every queue published to (for listings; written by clients, one key per command) |
//! | `<p>:{rate:<key>}` | string | a rate limit's theoretical arrival time (µs, server clock; `<key>` is `task:<name>` or `queue:<queue>`), expiring once past (`lua/rate.lua`) |
//! | `<p>:{workers}:all` | zset | the ids of registered workers (score: when the record expires, ms, server clock) |
//! | `<p>:{workers}:worker:<id>` | string | a worker's registry record (MessagePack `WorkerInfo`), with the TTL it was written with |
//! | `<p>:done:<uuid>` | pub/sub channel | the final state, published when written; `forgotten` when the state is deleted (a channel, not a key) |
//! | `<p>:{revoked}` | zset | revoked task UUIDs (score: when the revocation ends, ms since the Unix epoch: the results TTL after the revoke; `+inf` when results are kept for ever); ended ones are dropped (up to 1,000 per call) whenever one is recorded or the set is read |
//! | `<p>:{revoked}:reason` | hash | task UUID → the reason of its revocation in `<p>:{revoked}` (same slot, dropped with it) |
//! | `<p>:revoked` | pub/sub channel | each revocation as it is recorded, `<uuid>\n<until ms, empty for ever>\n<reason>`, for the workers watching (a channel, not a key) |
//! | `<p>:progress:<uuid>` | pub/sub channel | each progress value of the task, published with its write (a channel, not a key) |
//! | `<p>:{periodic}:entries` | set | every periodic entry name |
//! | `<p>:{periodic}:entry:<name>` | hash | a periodic entry: `spec`, `tz`, `paused` (`0`/`1`), `next_run`, `last_run` (ms), `last_task` (UUID), `claimed` (ms: the claim watermark) |
//! | `<p>:{wf:<workflow>}` | string | a workflow's record (its steps and their tasks, MessagePack written by core), written once when a chain, group or chord is sent; the results TTL from that write (none when results are kept forever); its own slot |

use uuid::Uuid;

/// The keys of one queue that every queue script takes first, `KEYS[1]` to `KEYS[8]`
/// in this order (`lib.lua`'s `queue_keys` names them the same).
pub(crate) const QUEUE_KEYS: [&str; 8] = [
    "ready",
    "delayed",
    "inflight",
    "msg",
    "count",
    "seq",
    "lease_seq",
    "dead",
];

/// Builds key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One of the [`QUEUE_KEYS`] of `queue`.
    pub(crate) fn queue(&self, queue: &str, kind: &str) -> String {
        format!("{}:{{q:{queue}}}:{kind}", self.prefix)
    }

    pub(crate) fn ready(&self, queue: &str) -> String {
        self.queue(queue, "ready")
    }

    pub(crate) fn delayed(&self, queue: &str) -> String {
        self.queue(queue, "delayed")
    }

    pub(crate) fn inflight(&self, queue: &str) -> String {
        self.queue(queue, "inflight")
    }

    pub(crate) fn msg(&self, queue: &str) -> String {
        self.queue(queue, "msg")
    }

    pub(crate) fn dead(&self, queue: &str) -> String {
        self.queue(queue, "dead")
    }

    /// The unique lock `key` of `queue`.
    pub(crate) fn unique(&self, queue: &str, key: &str) -> String {
        format!("{}:{{q:{queue}}}:unique:{key}", self.prefix)
    }

    pub(crate) fn paused(&self, queue: &str) -> String {
        self.queue(queue, "paused")
    }

    pub(crate) fn failed(&self, queue: &str) -> String {
        self.queue(queue, "failed")
    }

    /// The set of the minutes that have a statistics bucket in `queue`.
    pub(crate) fn stats_minutes(&self, queue: &str) -> String {
        self.queue(queue, "stats")
    }

    /// The statistics bucket of `queue` in `minute` (ms / 60,000).
    pub(crate) fn stats(&self, queue: &str, minute: u64) -> String {
        format!("{}:{{q:{queue}}}:stats:{minute}", self.prefix)
    }

    /// The index of registered workers.
    pub(crate) fn workers(&self) -> String {
        format!("{}:{{workers}}:all", self.prefix)
    }

    /// The registry record of worker `id`.
    pub(crate) fn worker(&self, id: &str) -> String {
        format!("{}:{{workers}}:worker:{id}", self.prefix)
    }

    pub(crate) fn wake(&self, queue: &str) -> String {
        format!("{}:{{wake}}:{queue}", self.prefix)
    }

    /// A rate limit's theoretical arrival time; `key` is `task:<name>` or
    /// `queue:<queue>`, its own cluster slot.
    pub(crate) fn rate(&self, key: &str) -> String {
        format!("{}:{{rate:{key}}}", self.prefix)
    }

    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    pub(crate) fn state(&self, queue: &str, uuid: Uuid) -> String {
        format!("{}:{{q:{queue}}}:state:{uuid}", self.prefix)
    }

    /// The last progress value of a task sent to `queue`.
    pub(crate) fn progress(&self, queue: &str, uuid: Uuid) -> String {
        format!("{}:{{q:{queue}}}:progress:{uuid}", self.prefix)
    }

    /// The pub/sub channel of a task's progress values.
    pub(crate) fn progress_channel(&self, uuid: Uuid) -> String {
        format!("{}:progress:{uuid}", self.prefix)
    }

    /// The pub/sub channel of a task's final state.
    pub(crate) fn done(&self, uuid: Uuid) -> String {
        format!("{}:done:{uuid}", self.prefix)
    }

    /// The set of revoked task UUIDs, scored by when each revocation ends.
    pub(crate) fn revoked(&self) -> String {
        format!("{}:{{revoked}}", self.prefix)
    }

    /// The reasons of the revocations in [`revoked`](Self::revoked) (same slot).
    pub(crate) fn revoked_reasons(&self) -> String {
        format!("{}:{{revoked}}:reason", self.prefix)
    }

    /// The pub/sub channel revocations are published on.
    pub(crate) fn revoked_channel(&self) -> String {
        format!("{}:revoked", self.prefix)
    }

    pub(crate) fn chord(&self, queue: &str, group: Uuid) -> String {
        format!("{}:{{q:{queue}}}:chord:{group}", self.prefix)
    }

    pub(crate) fn chord_results(&self, queue: &str, group: Uuid) -> String {
        format!("{}:{{q:{queue}}}:chord:{group}:results", self.prefix)
    }

    /// The record of a workflow: its own hash tag, as nothing else is read with it.
    pub(crate) fn workflow(&self, workflow: Uuid) -> String {
        format!("{}:{{wf:{workflow}}}", self.prefix)
    }

    pub(crate) fn periodic_entries(&self) -> String {
        format!("{}:{{periodic}}:entries", self.prefix)
    }

    pub(crate) fn periodic_entry(&self, name: &str) -> String {
        format!("{}:{{periodic}}:entry:{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name [`Keys`] builds, with the placeholders the tables use.
    fn built() -> Vec<String> {
        let k = Keys::new("<p>");
        let (q, u) = ("<queue>", Uuid::nil());
        let mut names: Vec<String> = QUEUE_KEYS.iter().map(|kind| k.queue(q, kind)).collect();
        names.extend([
            k.paused(q),
            k.unique(q, "<key>"),
            k.failed(q),
            k.stats_minutes(q),
            k.stats(q, 0).replace(":stats:0", ":stats:<minute>"),
            k.workers(),
            k.worker("<id>"),
            k.state(q, u),
            k.chord(q, u),
            k.chord_results(q, u),
            k.wake(q),
            k.queues(),
            k.rate("<key>"),
            k.done(u),
            k.revoked(),
            k.revoked_reasons(),
            k.revoked_channel(),
            k.progress(q, u),
            k.progress_channel(u),
            k.periodic_entries(),
            k.periodic_entry("<name>"),
            k.workflow(u).replace(&u.to_string(), "<workflow>"),
        ]);
        names
            .into_iter()
            .map(|n| {
                n.replace(&u.to_string(), "<uuid>")
                    .replace(":chord:<uuid>", ":chord:<group>")
            })
            .collect()
    }

    /// The first column of each row of the markdown tables in `doc` whose header's
    /// first column is `key`: one key name per row.
    fn table(doc: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut in_table = false;
        for line in doc.lines() {
            let line = line.trim_start_matches("//!").trim();
            if line.starts_with("| key |") {
                in_table = true;
                continue;
            }
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            if !in_table || line.starts_with("|---") {
                continue;
            }
            let cell = line.split('|').nth(1).unwrap_or_default();
            names.push(cell.trim().trim_matches('`').to_owned());
        }
        names
    }

    #[test]
    fn the_table_lists_every_key_built() {
        let mut doc = table(include_str!("keys.rs"));
        let mut keys = built();
        doc.sort();
        keys.sort();
        assert_eq!(doc, keys);
    }

    #[test]
    fn the_crate_docs_list_the_same_keys() {
        let mut crate_doc = table(include_str!("lib.rs"));
        let mut keys = built();
        crate_doc.sort();
        keys.sort();
        assert_eq!(crate_doc, keys);
    }

    #[test]
    fn lua_names_the_queue_keys_in_order() {
        let lib = include_str!("lua/lib.lua");
        for (i, kind) in QUEUE_KEYS.iter().enumerate() {
            let entry = format!("{kind} = KEYS[{}]", i + 1);
            assert!(lib.contains(&entry), "lib.lua's queue_keys lacks `{entry}`");
        }
        assert!(lib.contains(&format!("QUEUE_KEY_COUNT = {}", QUEUE_KEYS.len())));
    }

    #[test]
    fn no_script_builds_a_key_name() {
        let scripts = [
            include_str!("lua/lib.lua"),
            include_str!("lua/publish.lua"),
            include_str!("lua/fetch.lua"),
            include_str!("lua/settle.lua"),
            include_str!("lua/extend.lua"),
            include_str!("lua/complete.lua"),
            include_str!("lua/chord_done.lua"),
            include_str!("lua/requeue.lua"),
            include_str!("lua/store.lua"),
            include_str!("lua/revocation.lua"),
            include_str!("lua/revocations.lua"),
            include_str!("lua/revoke.lua"),
            include_str!("lua/pending.lua"),
            include_str!("lua/periodic_claim.lua"),
            include_str!("lua/periodic_pause.lua"),
            include_str!("lua/periodic_record.lua"),
            include_str!("lua/periodic_remove.lua"),
            include_str!("lua/periodic_upsert.lua"),
            include_str!("lua/page.lua"),
            include_str!("lua/find.lua"),
            include_str!("lua/dead_one.lua"),
            include_str!("lua/purge.lua"),
            include_str!("lua/worker_register.lua"),
            include_str!("lua/publish_unique.lua"),
            include_str!("lua/unique_release.lua"),
            include_str!("lua/rate.lua"),
        ];
        for script in scripts {
            let code: String = script
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for part in [
                "{q:",
                "{wake}",
                "{periodic}",
                ":state:",
                "chord:",
                ":done:",
                ":progress:",
                ":results",
                ":paused",
                ":unique",
                ":failed",
                ":stats",
                "{workers}",
                "{revoked}",
                ":revoked",
                "{rate:",
                ":worker:",
                "prefix",
            ] {
                assert!(
                    !code.contains(part),
                    "a script builds a key name with `{part}`:\n{code}"
                );
            }
        }
    }
}

//! Every Redis key name, in one place. `lua/lib.lua` builds the same names.
//!
//! Every key of a queue, the states of the tasks sent to it and the chords whose
//! callback goes to it share the queue's hash tag `{q:<queue>}`: one Redis Cluster slot
//! per queue, so each script and multi-key command works within one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{q:<queue>}:ready` | zset | ids ready to deliver (score: priority, then age) |
//! | `<p>:{q:<queue>}:delayed` | zset | ids waiting for their ETA (score: ETA, ms) |
//! | `<p>:{q:<queue>}:inflight` | zset | deliveries not settled, as `<id>/<lease token>` (score: lease deadline, ms), and `~` (score +inf) that keeps the set, and its skip-list encoding, when nothing is in flight |
//! | `<p>:{q:<queue>}:msg` | hash | id → payload |
//! | `<p>:{q:<queue>}:count` | hash | id → deliveries that ended unsettled (lease expired, released); none for most messages |
//! | `<p>:{q:<queue>}:seq`, `…:lease_seq` | string | id and token counters |
//! | `<p>:{q:<queue>}:dead` | list | dead letters: `<reason length>:<reason><payload>` |
//! | `<p>:{q:<queue>}:state:<uuid>` | string | the state (MessagePack) of a task sent to the queue: no TTL while it is PENDING, RECEIVED, STARTED or RETRY; the results TTL from the write of its final state (SUCCESS, FAILURE), which a non-final write never replaces |
//! | `<p>:{q:<queue>}:chord:<group>` | hash | a chord whose callback goes to the queue: count, callback payload, priority, fired, failure; no TTL until the callback's state is final, then the results TTL |
//! | `<p>:{q:<queue>}:chord:<group>:results` | hash | member index → encoded result; expires with the chord's hash |
//! | `<p>:{wake}:<queue>` | list | wake-up tokens for the queue's blocked workers (at most 16); one slot for every queue's list, so a worker blocks on all its queues in one `BLPOP` |
//! | `<p>:queues` | set | every queue published to (written by clients, one key per command) |
//! | `<p>:done:<uuid>` | pub/sub channel | the final state, published when written; anything else (`forget` publishes `forgotten`) makes waiters read the state again (a channel, not a key) |

use uuid::Uuid;

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

    pub(crate) fn queue(&self, queue: &str, kind: &str) -> String {
        format!("{}:{{q:{queue}}}:{kind}", self.prefix)
    }

    pub(crate) fn ready(&self, queue: &str) -> String {
        self.queue(queue, "ready")
    }

    pub(crate) fn wake(&self, queue: &str) -> String {
        format!("{}:{{wake}}:{queue}", self.prefix)
    }

    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    pub(crate) fn state(&self, queue: &str, uuid: Uuid) -> String {
        format!("{}:{{q:{queue}}}:state:{uuid}", self.prefix)
    }

    pub(crate) fn done(&self, uuid: Uuid) -> String {
        format!("{}:done:{uuid}", self.prefix)
    }

    pub(crate) fn chord(&self, queue: &str, group: Uuid) -> String {
        format!("{}:{{q:{queue}}}:chord:{group}", self.prefix)
    }

    pub(crate) fn chord_results(&self, queue: &str, group: Uuid) -> String {
        format!("{}:{{q:{queue}}}:chord:{group}:results", self.prefix)
    }
}

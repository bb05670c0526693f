//! Every Redis key name, in one place. `lua/lib.lua` builds the same names.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{q:<queue>}:ready` | zset | ids ready to deliver (score: priority, then age) |
//! | `<p>:{q:<queue>}:delayed` | zset | ids waiting for their ETA (score: ETA, ms) |
//! | `<p>:{q:<queue>}:inflight` | zset | ids delivered, not settled (score: lease deadline, ms) |
//! | `<p>:{q:<queue>}:msg` | hash | id → payload |
//! | `<p>:{q:<queue>}:count` | hash | id → delivery count |
//! | `<p>:{q:<queue>}:lease` | hash | id → current lease token |
//! | `<p>:{q:<queue>}:seq`, `…:lease_seq` | string | id and token counters |
//! | `<p>:{q:<queue>}:notify` | list | wake-up tokens for blocked workers |
//! | `<p>:{q:<queue>}:dead` | list | dead letters: `<reason length>:<reason><payload>` |
//! | `<p>:queues` | set | every queue ever published to |
//! | `<p>:state:<uuid>` | string | a task's state (MessagePack), with the results TTL |
//! | `<p>:done:<uuid>` | pub/sub channel | the final state, published when written |
//! | `<p>:chord:<group>` | hash | count, callback payload, queue, priority, fired, failure |
//! | `<p>:chord:<group>:results` | hash | member index → encoded result |

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

    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    pub(crate) fn state(&self, uuid: Uuid) -> String {
        format!("{}:state:{uuid}", self.prefix)
    }

    pub(crate) fn done(&self, uuid: Uuid) -> String {
        format!("{}:done:{uuid}", self.prefix)
    }

    pub(crate) fn chord(&self, group: Uuid) -> String {
        format!("{}:chord:{group}", self.prefix)
    }

    pub(crate) fn chord_results(&self, group: Uuid) -> String {
        format!("{}:chord:{group}:results", self.prefix)
    }
}

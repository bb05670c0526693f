//! The inspect and admin façade: [`Inspector`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::json::msgpack_to_json;
use super::{ListedTask, Page, QueueInfo, StatsBucket, TaskList, WorkerInfo};
use crate::engine::BrokerAdmin;
use crate::error::{Error, Result};
use crate::periodic::{PeriodicEntry, Scheduler};
use crate::reason::DeadLetterReason;
use crate::result::{State, TaskState};
use crate::server::Server;
use crate::signature::{RawSignature, now_ms};

/// What operators and tools use to see and act on queues, tasks, workers, statistics
/// and periodic entries: one façade over the broker's
/// [`BrokerAdmin`], the result backend and the periodic store, made by
/// [`Server::inspect`]. The `machinery` CLI is built on it.
///
/// Compared with calling [`BrokerAdmin`] directly it joins what one engine call does
/// not know: listed tasks get their UUID from their payload and, in flight, the worker
/// running them (from the worker registry); [`task`](Inspector::task) puts the stored
/// state, the message still in the broker and its arguments decoded to JSON together.
///
/// Every method may fail with the engine's errors, and with [`Error::Unsupported`] when
/// the engine lacks that part of the admin plane. Cheap to clone.
///
/// ```
/// use machinery_core::Server;
/// use machinery_core::inspect::TaskList;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> machinery_core::Result<()> {
/// let server = Server::memory();
/// let inspector = server.inspect()?;
/// # let _ = async {
/// for queue in inspector.queues().await? {
///     println!("{}: {} ready, {} dead", queue.name, queue.ready, queue.dead);
/// }
/// let page = inspector.tasks("emails", TaskList::Pending, None, 100).await?;
/// for task in &page.items {
///     println!("{:?}", task.uuid);
/// }
/// // `page.next` is the cursor of the next page.
/// # Ok::<(), machinery_core::Error>(())
/// # };
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Inspector {
    server: Server,
    scheduler: OnceCell<Scheduler>,
}

/// The explicit consent that a destructive bulk action takes
/// ([`Inspector::purge`], [`Inspector::purge_dead_letters`]), so that it is never done
/// by a call that merely looks like a listing. The CLI passes it for `--yes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Do it.
    Yes,
}

/// Everything known about one task: [`Inspector::task`].
///
/// Times are milliseconds since the Unix epoch, durations milliseconds. Arguments and
/// results are shown as JSON ([`msgpack_to_json`] says how).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's UUID.
    pub uuid: Uuid,
    /// The registered task name.
    pub name: String,
    /// The queue it was sent to.
    pub queue: String,
    /// Its stored state; `None` when the message is in the broker but no state is
    /// stored (published without one, or the state expired).
    pub state: Option<State>,
    /// The result, on SUCCESS.
    pub result: Option<serde_json::Value>,
    /// The error text, on FAILURE and RETRY.
    pub error: Option<String>,
    /// The last progress value it reported
    /// ([`TaskContext::set_progress`](crate::TaskContext::set_progress)), as JSON; `None`
    /// when it reported none, the value expired, or the result backend keeps none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
    /// Retries done so far.
    pub retried: u32,
    /// The group (or chord) it belongs to.
    pub group: Option<Uuid>,
    /// The workflow (chain, group or chord) it is a part of, when it was sent as one:
    /// [`Inspector::workflow`] shows the whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Uuid>,
    /// When it was sent, started and finished.
    pub timings: Timings,
    /// The delivery of the message that wrote the state (1 for the first); 0 when no
    /// worker wrote it.
    pub delivery: u32,
    /// The id ([`WorkerInfo::id`]) of the worker that runs it now, or else of the one
    /// that wrote its state.
    pub worker: Option<String>,
    /// The message's headers.
    pub headers: BTreeMap<String, String>,
    /// The producer's argument schema, e.g. `add(i64, i64) -> i64`, which names the
    /// positional [`args`](TaskInfo::args).
    pub schema: Option<String>,
    /// The arguments, from the message when it is still in the broker, else from the
    /// state (kept with `result_extended`); `None` when neither has them.
    pub args: Option<serde_json::Value>,
    /// Where its message is in the broker, when it is still there.
    pub location: Option<TaskLocation>,
    /// What could not be read (an undecodable result, message or arguments; a broker
    /// that cannot look messages up), so that a missing field is explained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// When a task was sent, started and finished ([`TaskInfo::timings`]), in
/// milliseconds; `None` when unknown or not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Timings {
    /// When its message was created.
    pub sent_at: Option<u64>,
    /// When its last run started.
    pub started_at: Option<u64>,
    /// When it reached SUCCESS or FAILURE (the final state's write).
    pub finished_at: Option<u64>,
    /// When its state was last written.
    pub updated_at: Option<u64>,
    /// `finished_at - started_at`: how long the last run took.
    pub runtime_ms: Option<u64>,
}

/// Where a task's message is in the broker ([`TaskInfo::location`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskLocation {
    /// The list it is in: pending, delayed, in flight or dead.
    pub list: TaskList,
    /// The queue.
    pub queue: String,
    /// When delayed: when it becomes ready (ms).
    pub eta: Option<u64>,
    /// When in flight: when its lease ends unless extended (ms).
    pub lease_deadline: Option<u64>,
    /// Deliveries that ended unsettled so far.
    pub deliveries: u32,
    /// When dead: why it was dead-lettered.
    pub reason: Option<DeadLetterReason>,
}

/// `Ok(None)` for an engine that lacks the operation, so that what it has is still
/// shown.
fn unless_unsupported<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Unsupported { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

impl Inspector {
    /// The façade over `server`, which has an admin plane ([`Server::inspect`] checks).
    pub(crate) fn new(server: Server) -> Self {
        Inspector {
            server,
            scheduler: OnceCell::new(),
        }
    }

    /// The server inspected.
    pub fn server(&self) -> &Server {
        &self.server
    }

    fn admin(&self) -> Result<&dyn BrokerAdmin> {
        self.server.admin()
    }

    /// Every queue the broker knows, with its counts, by name.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        self.admin()?.queues().await
    }

    /// One page of the tasks of `queue` in `list`: at most `limit` items (a `limit` of
    /// 0 counts as 1) from `cursor` on (`None`: the first page; then the previous
    /// page's [`next`](Page::next)). Each item's [`uuid`](ListedTask::uuid) is read
    /// from its payload when the engine did not fill it (and the payload decodes); for
    /// [`TaskList::InFlight`], [`worker`](ListedTask::worker) is the worker whose
    /// registry record says it runs the task (none when the registry does not know:
    /// a worker that just took it, or an engine without a registry).
    ///
    /// Never reads more of the queue than one page and, for in-flight tasks, the
    /// worker registry.
    ///
    /// # Errors
    /// [`Error::InvalidCursor`] for a cursor not made by this listing; engine errors.
    pub async fn tasks(
        &self,
        queue: &str,
        list: TaskList,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ListedTask>> {
        let mut page = self
            .admin()?
            .tasks(queue, list, cursor, limit.max(1))
            .await?;
        for item in &mut page.items {
            if item.uuid.is_none() {
                item.uuid = RawSignature::decode(&item.payload).ok().map(|s| s.uuid);
            }
        }
        if list == TaskList::InFlight && !page.items.is_empty() {
            let running = self.running().await?;
            for item in &mut page.items {
                if item.worker.is_none() {
                    item.worker = item.uuid.and_then(|u| running.get(&u).cloned());
                }
            }
        }
        Ok(page)
    }

    /// Task UUID → id of the worker running it, from the registry (empty when the
    /// engine has none).
    async fn running(&self) -> Result<HashMap<Uuid, String>> {
        let workers = unless_unsupported(self.admin()?.workers().await)?.unwrap_or_default();
        Ok(workers
            .into_iter()
            .flat_map(|w| {
                let id = w.id;
                w.running.into_iter().map(move |r| (r.uuid, id.clone()))
            })
            .collect())
    }

    /// Everything known about task `uuid`: its stored state (looked up in every queue,
    /// as [`Server::result`] does), its message when still in the broker (ready,
    /// delayed, in flight or dead: [`TaskInfo::location`]), its arguments and result as
    /// JSON. `None` when neither a state nor a message is found.
    ///
    /// Finding the message may cost a walk of the task's queue (of every queue when
    /// no state says which); an engine that cannot look messages up leaves
    /// [`location`](TaskInfo::location) empty and says so in
    /// [`warnings`](TaskInfo::warnings).
    ///
    /// # Errors
    /// Engine errors.
    pub async fn task(&self, uuid: Uuid) -> Result<Option<TaskInfo>> {
        let admin = self.admin()?;
        let state = self.server.backend().load("", uuid).await?;
        let mut warnings = Vec::new();
        let unsupported_find = |warnings: &mut Vec<String>| {
            warnings.push(format!(
                "the {} engine cannot look messages up: where the message is is not shown",
                self.server.broker().engine()
            ));
        };
        let found = match state.as_ref().filter(|s| !s.queue.is_empty()) {
            Some(s) => match unless_unsupported(admin.find(&s.queue, uuid).await)? {
                Some(found) => found,
                None => {
                    unsupported_find(&mut warnings);
                    None
                }
            },
            None => match unless_unsupported(admin.queues().await)? {
                Some(queues) => {
                    let mut found = None;
                    for q in queues {
                        match unless_unsupported(admin.find(&q.name, uuid).await)? {
                            Some(None) => {}
                            Some(hit) => {
                                found = hit;
                                break;
                            }
                            None => {
                                unsupported_find(&mut warnings);
                                break;
                            }
                        }
                    }
                    found
                }
                None => {
                    unsupported_find(&mut warnings);
                    None
                }
            },
        };
        if state.is_none() && found.is_none() {
            return Ok(None);
        }
        let message = found.as_ref().and_then(|(_, listed)| {
            RawSignature::decode(&listed.payload)
                .map_err(|e| warnings.push(format!("the message does not decode: {e}")))
                .ok()
        });
        let mut worker = state.as_ref().and_then(|s| s.worker.clone());
        if matches!(found, Some((TaskList::InFlight, _)))
            && let Some(running) = self.running().await?.remove(&uuid)
        {
            worker = Some(running);
        }
        let progress = match state.as_ref().filter(|s| !s.queue.is_empty()) {
            Some(s) => self.progress(&s.queue, uuid, &mut warnings).await,
            None => None,
        };
        let mut info = build_info(uuid, state, found, message, worker, warnings);
        info.progress = progress;
        Ok(Some(info))
    }

    /// The workflow (chain, group or chord) `uuid` names, or that task `uuid` is a part
    /// of: its parts in order with their current states, each group's members counted
    /// per state and the first [`WORKFLOW_MEMBERS_SHOWN`](super::WORKFLOW_MEMBERS_SHOWN)
    /// listed. `None` when `uuid` is neither a workflow id nor a part of one (a task
    /// sent on its own), or when the workflow's record expired.
    ///
    /// A part is found through its stored state, or else its message in the broker
    /// (as [`task`](Inspector::task) finds it). The states are read with bounded
    /// concurrency: a 10,000-member chord costs 10,000 reads, pipelined.
    ///
    /// # Errors
    /// Engine errors; [`Error::Unsupported`] when the result backend keeps no workflow
    /// records; [`Error::Decode`] when the record does not decode.
    pub async fn workflow(&self, uuid: Uuid) -> Result<Option<super::WorkflowInfo>> {
        let backend = self.server.backend();
        let (id, bytes) = match backend.load_workflow(uuid).await? {
            Some(bytes) => (uuid, bytes),
            None => {
                let part = match backend.load("", uuid).await? {
                    Some(state) => state.workflow,
                    None => self.task(uuid).await?.and_then(|t| t.workflow),
                };
                let Some(id) = part else {
                    return Ok(None);
                };
                match backend.load_workflow(id).await? {
                    Some(bytes) => (id, bytes),
                    None => return Ok(None),
                }
            }
        };
        let record = crate::workflow::record::Record::decode(&bytes)?;
        super::workflow::load(&self.server, id, &record)
            .await
            .map(Some)
    }

    /// The last progress value of task `uuid`, kept under `queue`, as JSON; what could
    /// not be read goes to `warnings` (an engine without progress is no warning).
    async fn progress(
        &self,
        queue: &str,
        uuid: Uuid,
        warnings: &mut Vec<String>,
    ) -> Option<serde_json::Value> {
        match self.server.backend().progress(queue, uuid).await {
            Ok(bytes) => bytes.and_then(|b| {
                msgpack_to_json(&b)
                    .map_err(|e| warnings.push(format!("the progress value does not decode: {e}")))
                    .ok()
            }),
            Err(Error::Unsupported { .. }) => None,
            Err(e) => {
                warnings.push(format!("the progress value could not be read: {e}"));
                None
            }
        }
    }

    /// The workers alive, by name then id.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.admin()?.workers().await
    }

    /// The statistics buckets of the last `since` (from the minute `since` ago to now),
    /// of `queue` or of every queue, ordered by minute, queue and task.
    /// [`StatsSummary::of`](super::StatsSummary::of) adds them up.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn stats(&self, since: Duration, queue: Option<&str>) -> Result<Vec<StatsBucket>> {
        let since_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        let from_minute = now_ms().saturating_sub(since_ms) / 60_000;
        self.admin()?.stats(from_minute, queue).await
    }

    /// Deletes task `uuid` from `queue` if it is ready or delayed; whether it was.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn delete_pending(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        self.admin()?.delete_pending(queue, uuid).await
    }

    /// Deletes every ready and delayed message of `queue` (not those in flight nor the
    /// dead letters); how many.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn purge(&self, queue: &str, confirm: Confirm) -> Result<u64> {
        let Confirm::Yes = confirm;
        self.admin()?.purge(queue).await
    }

    /// Moves the dead letter of task `uuid` back into `queue`, ready at once; whether
    /// it was there.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn requeue_dead_letter(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        self.admin()?.requeue_dead_letter(queue, uuid).await
    }

    /// Moves every dead letter of `queue` back into it; how many.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn requeue_dead_letters(&self, queue: &str) -> Result<usize> {
        self.admin()?.requeue_dead_letters(queue).await
    }

    /// Deletes the dead letter of task `uuid` from `queue`; whether it was there.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn delete_dead_letter(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        self.admin()?.delete_dead_letter(queue, uuid).await
    }

    /// Deletes every dead letter of `queue`; how many.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn purge_dead_letters(&self, queue: &str, confirm: Confirm) -> Result<usize> {
        let Confirm::Yes = confirm;
        self.admin()?.purge_dead_letters(queue).await
    }

    /// Pauses `queue`: workers fetch nothing from it until it is resumed, whatever
    /// restarts meanwhile; whether it was running.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        self.admin()?.pause(queue).await
    }

    /// Resumes a paused `queue`; whether it was paused.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        self.admin()?.resume(queue).await
    }

    /// The periodic store's manager ([`Scheduler::new`] on this server, made at the
    /// first call), to list, pause, resume and remove entries.
    ///
    /// # Errors
    /// As [`Scheduler::new`]: no periodic store for the result backend's engine,
    /// connection errors.
    pub async fn scheduler(&self) -> Result<&Scheduler> {
        self.scheduler
            .get_or_try_init(|| Scheduler::new(&self.server))
            .await
    }

    /// Every periodic entry, by name.
    ///
    /// # Errors
    /// As [`scheduler`](Inspector::scheduler); store errors.
    pub async fn periodic_entries(&self) -> Result<Vec<PeriodicEntry>> {
        self.scheduler().await?.entries().await
    }

    /// Pauses the periodic entry `name` for every scheduler; `false` when there is no
    /// such entry.
    ///
    /// # Errors
    /// As [`scheduler`](Inspector::scheduler); store errors.
    pub async fn pause_periodic(&self, name: &str) -> Result<bool> {
        self.scheduler().await?.pause(name).await
    }

    /// Resumes the periodic entry `name` from its next tick; `false` when there is no
    /// such entry.
    ///
    /// # Errors
    /// As [`scheduler`](Inspector::scheduler); store errors.
    pub async fn resume_periodic(&self, name: &str) -> Result<bool> {
        self.scheduler().await?.resume(name).await
    }

    /// Removes the periodic entry `name` for every scheduler (a scheduler started
    /// later with it in its code registers it again); `false` when there was none.
    ///
    /// # Errors
    /// As [`scheduler`](Inspector::scheduler); store errors.
    pub async fn remove_periodic(&self, name: &str) -> Result<bool> {
        self.scheduler().await?.remove(name).await
    }
}

/// Puts a task's state and message together.
fn build_info(
    uuid: Uuid,
    state: Option<TaskState>,
    found: Option<(TaskList, ListedTask)>,
    message: Option<RawSignature>,
    worker: Option<String>,
    mut warnings: Vec<String>,
) -> TaskInfo {
    let mut json = |what: &str, bytes: &[u8]| match msgpack_to_json(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!("the {what} does not decode: {e}"));
            None
        }
    };
    let result = state
        .as_ref()
        .and_then(|s| s.result.as_deref())
        .and_then(|r| json("result", r));
    let args = match (&message, state.as_ref().and_then(|s| s.args.as_deref())) {
        (Some(m), _) if !m.args.is_empty() => json("arguments", &m.args),
        (_, Some(a)) => json("arguments", a),
        _ => None,
    };
    let s = state.as_ref();
    let finished_at = s.filter(|s| s.state.is_terminal()).map(|s| s.updated_at);
    let started_at = s.and_then(|s| nonzero(s.started_at));
    let timings = Timings {
        sent_at: s
            .and_then(|s| nonzero(s.sent_at))
            .or_else(|| message.as_ref().and_then(|m| nonzero(m.created_at))),
        started_at,
        finished_at,
        updated_at: s.and_then(|s| nonzero(s.updated_at)),
        runtime_ms: started_at
            .zip(finished_at)
            .map(|(start, end)| end.saturating_sub(start)),
    };
    let (headers, schema) = match (&message, s) {
        (Some(m), _) => (
            m.headers.clone(),
            Some(m.schema.clone()).filter(|s| !s.is_empty()),
        ),
        (None, Some(s)) => (s.headers.clone(), s.schema.clone()),
        (None, None) => (BTreeMap::new(), None),
    };
    let location = found.map(|(list, l)| TaskLocation {
        list,
        queue: l.queue,
        eta: l.eta,
        lease_deadline: l.lease_deadline,
        deliveries: l.deliveries,
        reason: l.reason,
    });
    TaskInfo {
        uuid,
        name: s
            .map(|s| s.name.clone())
            .or_else(|| message.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default(),
        queue: s
            .map(|s| s.queue.clone())
            .filter(|q| !q.is_empty())
            .or_else(|| location.as_ref().map(|l| l.queue.clone()))
            .unwrap_or_default(),
        state: s.map(|s| s.state),
        result,
        error: s.and_then(|s| s.error.clone()),
        progress: None,
        retried: s
            .map(|s| s.retried)
            .or_else(|| message.as_ref().map(|m| m.retried))
            .unwrap_or(0),
        group: s
            .and_then(|s| s.group_uuid)
            .or_else(|| message.as_ref().and_then(|m| m.group_uuid)),
        workflow: s
            .and_then(|s| s.workflow)
            .or_else(|| message.as_ref().and_then(|m| m.workflow)),
        timings,
        delivery: s.map_or(0, |s| s.delivery),
        worker,
        headers,
        schema,
        args,
        location,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    //! The façade's own logic (joins, decoding, look-ups) over a fake admin plane, so
    //! it is checked whatever the engines do; the engines' admin planes have their
    //! conformance cases.

    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::engine::{Broker, Completion, DeadLetter, Delivery, Outgoing, ResultBackend};
    use crate::inspect::RunningTask;
    use crate::memory::{MemoryBackend, MemoryBroker};

    #[derive(Default)]
    struct FakeAdmin {
        /// Listed per queue and list; returned as one page.
        lists: Vec<(String, TaskList, ListedTask)>,
        workers: Option<Vec<WorkerInfo>>,
        can_find: bool,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl BrokerAdmin for FakeAdmin {
        async fn pending(&self, _: &str) -> Result<Vec<Vec<u8>>> {
            Ok(Vec::new())
        }
        async fn delayed(&self, _: Option<&str>) -> Result<Vec<Vec<u8>>> {
            Ok(Vec::new())
        }
        async fn dead_letters(&self, _: &str) -> Result<Vec<DeadLetter>> {
            Ok(Vec::new())
        }
        async fn requeue_dead_letters(&self, queue: &str) -> Result<usize> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("requeue_all {queue}"));
            Ok(2)
        }
        async fn purge_dead_letters(&self, queue: &str) -> Result<usize> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("purge_dead {queue}"));
            Ok(3)
        }
        async fn queues(&self) -> Result<Vec<QueueInfo>> {
            let mut names: Vec<&str> = self.lists.iter().map(|(q, ..)| q.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            Ok(names
                .into_iter()
                .map(|n| QueueInfo {
                    name: n.to_owned(),
                    ready: 0,
                    delayed: 0,
                    in_flight: 0,
                    dead: 0,
                    paused: false,
                })
                .collect())
        }
        async fn tasks(
            &self,
            queue: &str,
            list: TaskList,
            cursor: Option<&str>,
            limit: usize,
        ) -> Result<Page<ListedTask>> {
            self.calls.lock().unwrap().push(format!(
                "tasks {queue} {} {cursor:?} {limit}",
                list.as_str()
            ));
            Ok(Page {
                items: self
                    .lists
                    .iter()
                    .filter(|(q, l, _)| q == queue && *l == list)
                    .map(|(.., t)| t.clone())
                    .collect(),
                next: Some("next".into()),
            })
        }
        async fn find(&self, queue: &str, uuid: Uuid) -> Result<Option<(TaskList, ListedTask)>> {
            if !self.can_find {
                return Err(self.unsupported("finding"));
            }
            self.calls.lock().unwrap().push(format!("find {queue}"));
            Ok(self
                .lists
                .iter()
                .find(|(q, _, t)| {
                    q == queue && RawSignature::decode(&t.payload).is_ok_and(|s| s.uuid == uuid)
                })
                .map(|(_, l, t)| (*l, t.clone())))
        }
        async fn workers(&self) -> Result<Vec<WorkerInfo>> {
            self.workers
                .clone()
                .ok_or_else(|| self.unsupported("the worker registry"))
        }
        async fn stats(&self, since_minute: u64, queue: Option<&str>) -> Result<Vec<StatsBucket>> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("stats {since_minute} {queue:?}"));
            Ok(vec![StatsBucket::new(since_minute, "q", "t")])
        }
        async fn purge(&self, queue: &str) -> Result<u64> {
            self.calls.lock().unwrap().push(format!("purge {queue}"));
            Ok(7)
        }
    }

    struct FakeBroker {
        inner: MemoryBroker,
        admin: FakeAdmin,
    }

    #[async_trait]
    impl Broker for FakeBroker {
        fn engine(&self) -> &'static str {
            "fake"
        }
        fn visibility_timeout(&self) -> Duration {
            self.inner.visibility_timeout()
        }
        async fn publish(&self, messages: Vec<Outgoing>) -> Result<()> {
            self.inner.publish(messages).await
        }
        async fn fetch(
            &self,
            queues: &[String],
            max: usize,
            wait: Duration,
        ) -> Result<Vec<Delivery>> {
            self.inner.fetch(queues, max, wait).await
        }
        async fn ack(&self, delivery: &Delivery) -> Result<()> {
            self.inner.ack(delivery).await
        }
        async fn extend(&self, deliveries: &[Delivery]) -> Result<Vec<bool>> {
            self.inner.extend(deliveries).await
        }
        async fn release(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()> {
            self.inner.release(delivery, delay).await
        }
        async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
            self.inner.dead_letter(delivery, reason).await
        }
        async fn complete(
            &self,
            completions: &[Completion],
            backend: &dyn ResultBackend,
        ) -> Result<Vec<Result<()>>> {
            self.inner.complete(completions, backend).await
        }
        fn admin(&self) -> Option<&dyn BrokerAdmin> {
            Some(&self.admin)
        }
    }

    fn server(admin: FakeAdmin) -> (Server, Arc<MemoryBackend>) {
        let config = Config::default();
        let backend = Arc::new(MemoryBackend::new(None));
        let broker = Arc::new(FakeBroker {
            inner: MemoryBroker::new(&config),
            admin,
        });
        (Server::new(config, broker, backend.clone()), backend)
    }

    fn message(name: &str, args: &impl Serialize) -> RawSignature {
        let mut raw = RawSignature::new(name, rmp_serde::to_vec(args).unwrap());
        raw.routing_key = "q".into();
        raw.headers.insert("h".into(), "v".into());
        raw.schema = format!("{name}(i64, String)");
        raw
    }

    fn listed(raw: &RawSignature) -> ListedTask {
        ListedTask::new("q", raw.encode().unwrap())
    }

    fn worker(id: &str, running: &[Uuid]) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            name: format!("{id}-name"),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            queues: vec!["q".into()],
            concurrency: 1,
            prefetch: 1,
            tasks: Vec::new(),
            started_at: 1,
            heartbeat_at: 2,
            running: running
                .iter()
                .map(|&uuid| RunningTask {
                    uuid,
                    name: "t".into(),
                    queue: "q".into(),
                    started_at: 3,
                })
                .collect(),
            processed: 0,
            failed: 0,
        }
    }

    #[tokio::test]
    async fn listings_get_uuids_from_payloads_and_owners_from_the_registry() {
        let (a, b) = (message("t", &(1, "a")), message("t", &(2, "b")));
        let mut undecodable = ListedTask::new("q", b"junk".to_vec());
        undecodable.deliveries = 4;
        let admin = FakeAdmin {
            lists: vec![
                ("q".into(), TaskList::InFlight, listed(&a)),
                ("q".into(), TaskList::InFlight, listed(&b)),
                ("q".into(), TaskList::InFlight, undecodable),
                ("q".into(), TaskList::Pending, listed(&a)),
            ],
            workers: Some(vec![worker("w1", &[a.uuid]), worker("w2", &[])]),
            ..FakeAdmin::default()
        };
        let (server, _) = server(admin);
        let inspector = server.inspect().unwrap();
        let page = inspector
            .tasks("q", TaskList::InFlight, Some("c"), 0)
            .await
            .unwrap();
        assert_eq!(page.next.as_deref(), Some("next"));
        let got: Vec<_> = page
            .items
            .iter()
            .map(|t| (t.uuid, t.worker.as_deref(), t.deliveries))
            .collect();
        assert_eq!(
            got,
            [
                (Some(a.uuid), Some("w1"), 0),
                (Some(b.uuid), None, 0),
                (None, None, 4)
            ]
        );
        let pending = inspector
            .tasks("q", TaskList::Pending, None, 100)
            .await
            .unwrap();
        assert_eq!(pending.items[0].uuid, Some(a.uuid));
        assert_eq!(pending.items[0].worker, None);
    }

    #[tokio::test]
    async fn in_flight_listing_without_a_registry_still_lists() {
        let a = message("t", &(1, "a"));
        let (server, _) = server(FakeAdmin {
            lists: vec![("q".into(), TaskList::InFlight, listed(&a))],
            ..FakeAdmin::default()
        });
        let page = server
            .inspect()
            .unwrap()
            .tasks("q", TaskList::InFlight, None, 10)
            .await
            .unwrap();
        assert_eq!(page.items[0].uuid, Some(a.uuid));
        assert_eq!(page.items[0].worker, None);
    }

    #[tokio::test]
    async fn a_task_puts_state_message_and_json_together() {
        let raw = message("t", &(7, "seven"));
        let mut delayed = listed(&raw);
        delayed.eta = Some(99);
        let (server, backend) = server(FakeAdmin {
            lists: vec![
                (
                    "other".into(),
                    TaskList::Pending,
                    listed(&message("t", &(0, ""))),
                ),
                ("q".into(), TaskList::Delayed, delayed),
            ],
            can_find: true,
            ..FakeAdmin::default()
        });
        let mut state = TaskState::new(raw.uuid, "t", "q", State::Success);
        state.result = Some(rmp_serde::to_vec(&vec![1, 2]).unwrap());
        state.sent_at = 10;
        state.started_at = 20;
        state.updated_at = 65;
        state.worker = Some("w9".into());
        state.delivery = 2;
        backend.store(&[state]).await.unwrap();

        let info = server
            .inspect()
            .unwrap()
            .task(raw.uuid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.name, "t");
        assert_eq!(info.queue, "q");
        assert_eq!(info.state, Some(State::Success));
        assert_eq!(info.result, Some(json!([1, 2])));
        assert_eq!(info.args, Some(json!([7, "seven"])));
        assert_eq!(info.schema.as_deref(), Some("t(i64, String)"));
        assert_eq!(info.headers.get("h").map(String::as_str), Some("v"));
        assert_eq!(info.worker.as_deref(), Some("w9"));
        assert_eq!(info.delivery, 2);
        assert_eq!(
            info.timings,
            Timings {
                sent_at: Some(10),
                started_at: Some(20),
                finished_at: Some(65),
                updated_at: Some(65),
                runtime_ms: Some(45),
            }
        );
        let location = info.location.unwrap();
        assert_eq!((location.list, location.eta), (TaskList::Delayed, Some(99)));
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let json = serde_json::to_value(&info_for_json(&server, raw.uuid).await).unwrap();
        assert_eq!(json["timings"]["runtime_ms"], 45);
        assert_eq!(json["location"]["list"], "delayed");
    }

    async fn info_for_json(server: &Server, uuid: Uuid) -> TaskInfo {
        server.inspect().unwrap().task(uuid).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_message_without_state_is_found_in_some_queue_with_its_runner() {
        let raw = message("t", &(1, "x"));
        let mut in_flight = ListedTask::new("b", raw.encode().unwrap());
        in_flight.lease_deadline = Some(5);
        let (server, _) = server(FakeAdmin {
            lists: vec![
                (
                    "a".into(),
                    TaskList::Pending,
                    listed(&message("t", &(0, ""))),
                ),
                ("b".into(), TaskList::InFlight, in_flight),
            ],
            workers: Some(vec![worker("w1", &[raw.uuid])]),
            can_find: true,
            ..FakeAdmin::default()
        });
        let info = server
            .inspect()
            .unwrap()
            .task(raw.uuid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.state, None);
        assert_eq!(info.queue, "b");
        assert_eq!(info.worker.as_deref(), Some("w1"));
        assert_eq!(info.args, Some(json!([1, "x"])));
        assert_eq!(info.timings.sent_at, Some(raw.created_at));
        assert_eq!(info.location.unwrap().lease_deadline, Some(5));
        assert!(
            server
                .inspect()
                .unwrap()
                .task(Uuid::now_v7())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn without_find_the_state_is_shown_with_a_warning() {
        let (server, backend) = server(FakeAdmin::default());
        let uuid = Uuid::now_v7();
        let mut state = TaskState::new(uuid, "t", "q", State::Failure);
        state.error = Some("boom".into());
        state.args = Some(rmp_serde::to_vec(&(3,)).unwrap());
        state.result = Some(vec![0x92, 1]); // truncated
        backend.store(&[state]).await.unwrap();
        let info = server.inspect().unwrap().task(uuid).await.unwrap().unwrap();
        assert_eq!(info.error.as_deref(), Some("boom"));
        assert_eq!(info.args, Some(json!([3])));
        assert_eq!(info.result, None);
        assert_eq!(info.location, None);
        assert_eq!(info.warnings.len(), 2, "{:?}", info.warnings);
        assert!(info.warnings[0].contains("cannot look messages up"));
        assert!(info.warnings[1].contains("result does not decode"));
    }

    #[tokio::test]
    async fn the_progress_is_shown_as_json_or_explained() {
        let (server, backend) = server(FakeAdmin {
            can_find: true,
            ..FakeAdmin::default()
        });
        let inspector = server.inspect().unwrap();
        let (with, without, garbled) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for uuid in [with, without, garbled] {
            backend
                .store(&[TaskState::new(uuid, "t", "q", State::Started)])
                .await
                .unwrap();
        }
        #[derive(Serialize)]
        struct Done {
            rows: u32,
            of: u32,
        }
        let value = rmp_serde::to_vec_named(&Done { rows: 3, of: 10 }).unwrap();
        backend.set_progress("q", with, &value).await.unwrap();
        backend
            .set_progress("q", garbled, &[0x92, 1])
            .await
            .unwrap();

        let info = inspector.task(with).await.unwrap().unwrap();
        assert_eq!(info.progress, Some(json!({"rows": 3, "of": 10})));
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let shown = serde_json::to_value(&info).unwrap();
        assert_eq!(shown["progress"]["rows"], 3);

        let info = inspector.task(without).await.unwrap().unwrap();
        assert_eq!(info.progress, None);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let shown = serde_json::to_value(&info).unwrap();
        assert!(shown.get("progress").is_none(), "{shown}");

        let info = inspector.task(garbled).await.unwrap().unwrap();
        assert_eq!(info.progress, None);
        assert!(
            info.warnings
                .iter()
                .any(|w| w.contains("progress value does not decode")),
            "{:?}",
            info.warnings
        );
    }

    #[tokio::test]
    async fn actions_and_stats_reach_the_engine() {
        let (server, _) = server(FakeAdmin::default());
        let inspector = server.inspect().unwrap();
        assert_eq!(inspector.purge("q", Confirm::Yes).await.unwrap(), 7);
        assert_eq!(
            inspector
                .purge_dead_letters("q", Confirm::Yes)
                .await
                .unwrap(),
            3
        );
        assert_eq!(inspector.requeue_dead_letters("q").await.unwrap(), 2);
        let before = now_ms() / 60_000;
        let buckets = inspector
            .stats(Duration::from_secs(3600), Some("q"))
            .await
            .unwrap();
        let minute = buckets[0].minute;
        assert!((before - 60..=before - 59).contains(&minute), "{minute}");
        // Not implemented by the fake: the engine's Unsupported comes through.
        let e = inspector.pause("q").await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Unsupported {
                    engine: "broker's",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn periodic_entries_through_the_server_store() {
        let server = Server::memory();
        let inspector = server.inspect().unwrap();
        assert!(inspector.periodic_entries().await.unwrap().is_empty());
        assert!(!inspector.pause_periodic("nope").await.unwrap());
        assert!(!inspector.resume_periodic("nope").await.unwrap());
        assert!(!inspector.remove_periodic("nope").await.unwrap());
    }

    #[tokio::test]
    async fn a_broker_without_admin_is_unsupported() {
        struct Bare(MemoryBroker);
        #[async_trait]
        impl Broker for Bare {
            fn engine(&self) -> &'static str {
                "bare"
            }
            fn visibility_timeout(&self) -> Duration {
                self.0.visibility_timeout()
            }
            async fn publish(&self, m: Vec<Outgoing>) -> Result<()> {
                self.0.publish(m).await
            }
            async fn fetch(&self, q: &[String], n: usize, w: Duration) -> Result<Vec<Delivery>> {
                self.0.fetch(q, n, w).await
            }
            async fn ack(&self, d: &Delivery) -> Result<()> {
                self.0.ack(d).await
            }
            async fn extend(&self, d: &[Delivery]) -> Result<Vec<bool>> {
                self.0.extend(d).await
            }
            async fn release(&self, d: &Delivery, delay: Option<Duration>) -> Result<()> {
                self.0.release(d, delay).await
            }
            async fn dead_letter(&self, d: &Delivery, r: &DeadLetterReason) -> Result<()> {
                self.0.dead_letter(d, r).await
            }
        }
        let config = Config::default();
        let server = Server::new(
            config.clone(),
            Arc::new(Bare(MemoryBroker::new(&config))),
            Arc::new(MemoryBackend::new(None)),
        );
        let e = server.inspect().unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { engine: "bare", .. }),
            "{e}"
        );
    }
}

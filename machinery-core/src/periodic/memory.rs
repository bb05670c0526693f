//! The in-memory periodic store: one process, shared by every scheduler of one server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use uuid::Uuid;

use crate::engine::ResultBackend;
use crate::error::Result;
use crate::server::Server;

use super::schedule::from_ms;
use super::store::{Claim, EntrySpec, PeriodicEntry, PeriodicStore};

#[derive(Debug, Clone)]
struct Record {
    spec: String,
    timezone: String,
    paused: bool,
    next_run: Option<u64>,
    last_run: Option<u64>,
    last_task: Option<Uuid>,
    /// No tick at or before this instant can be claimed.
    claimed: u64,
}

/// Periodic entries kept in the process, for the memory engine. Every scheduler made by
/// [`Scheduler::new`](crate::periodic::Scheduler::new) on the same memory server shares
/// one, so a tick fires once however many schedulers the process runs.
#[derive(Debug, Default)]
pub struct MemoryPeriodicStore {
    entries: Mutex<BTreeMap<String, Record>>,
}

impl MemoryPeriodicStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryPeriodicStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        // Every update is one map operation, so a poisoned lock holds consistent data.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store shared by every scheduler of `server` (keyed by its result backend).
    pub(crate) fn for_server(server: &Server) -> Arc<MemoryPeriodicStore> {
        type Slot = (Weak<dyn ResultBackend>, Arc<MemoryPeriodicStore>);
        static STORES: Mutex<Vec<Slot>> = Mutex::new(Vec::new());
        let mut stores = STORES.lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|(backend, _)| backend.strong_count() > 0);
        let backend = server.backend();
        if let Some((_, store)) = stores
            .iter()
            .find(|(b, _)| b.upgrade().is_some_and(|b| Arc::ptr_eq(&b, backend)))
        {
            return store.clone();
        }
        let store = Arc::new(MemoryPeriodicStore::new());
        stores.push((Arc::downgrade(backend), store.clone()));
        store
    }
}

fn entry(name: &str, r: &Record) -> PeriodicEntry {
    let mut e = PeriodicEntry::new(name, r.spec.clone(), r.timezone.clone());
    e.paused = r.paused;
    e.next_run = r.next_run.map(from_ms);
    e.last_run = r.last_run.map(from_ms);
    e.last_task = r.last_task;
    e
}

#[async_trait]
impl PeriodicStore for MemoryPeriodicStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    async fn upsert(&self, spec: &EntrySpec, now_ms: u64) -> Result<bool> {
        let mut entries = self.lock();
        if let Some(r) = entries.get_mut(&spec.name) {
            r.spec.clone_from(&spec.spec);
            r.timezone.clone_from(&spec.timezone);
            r.next_run = spec.next_run_ms;
            return Ok(false);
        }
        entries.insert(
            spec.name.clone(),
            Record {
                spec: spec.spec.clone(),
                timezone: spec.timezone.clone(),
                paused: false,
                next_run: spec.next_run_ms,
                last_run: None,
                last_task: None,
                claimed: now_ms,
            },
        );
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<PeriodicEntry>> {
        Ok(self.lock().iter().map(|(n, r)| entry(n, r)).collect())
    }

    async fn get(&self, name: &str) -> Result<Option<PeriodicEntry>> {
        Ok(self.lock().get(name).map(|r| entry(name, r)))
    }

    async fn pause(&self, name: &str) -> Result<bool> {
        Ok(self.lock().get_mut(name).map(|r| r.paused = true).is_some())
    }

    async fn resume(&self, name: &str, now_ms: u64) -> Result<bool> {
        Ok(self
            .lock()
            .get_mut(name)
            .map(|r| {
                r.paused = false;
                r.claimed = r.claimed.max(now_ms);
            })
            .is_some())
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        Ok(self.lock().remove(name).is_some())
    }

    async fn claim_tick(&self, name: &str, scheduled_at_ms: u64) -> Result<Claim> {
        let mut entries = self.lock();
        let Some(r) = entries.get_mut(name) else {
            return Ok(Claim::Missing);
        };
        if r.paused {
            return Ok(Claim::Paused);
        }
        if scheduled_at_ms <= r.claimed {
            return Ok(Claim::Taken);
        }
        r.claimed = scheduled_at_ms;
        Ok(Claim::Won)
    }

    async fn record_run(
        &self,
        name: &str,
        scheduled_at_ms: u64,
        task: Uuid,
        next_run_ms: Option<u64>,
    ) -> Result<()> {
        if let Some(r) = self.lock().get_mut(name)
            && r.last_run.is_none_or(|last| last < scheduled_at_ms)
        {
            r.last_run = Some(scheduled_at_ms);
            r.last_task = Some(task);
            r.next_run = next_run_ms;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> EntrySpec {
        EntrySpec::new(name, "@every 1s", "UTC", Some(2_000))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_claimant_per_tick_among_many() {
        let store = Arc::new(MemoryPeriodicStore::new());
        store.upsert(&spec("e"), 1_000).await.expect("upsert");
        for tick in [2_000u64, 3_000, 4_000] {
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    store.claim_tick("e", tick).await.expect("claim")
                }));
            }
            let mut won = 0;
            for t in tasks {
                match t.await.expect("joined") {
                    Claim::Won => won += 1,
                    Claim::Taken => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(won, 1, "tick {tick}");
        }
        // An older tick is never claimable again, however late the caller.
        assert_eq!(
            store.claim_tick("e", 2_500).await.expect("claim"),
            Claim::Taken
        );
    }

    #[tokio::test]
    async fn ticks_before_creation_are_not_claimable() {
        let store = MemoryPeriodicStore::new();
        assert!(store.upsert(&spec("e"), 5_000).await.expect("upsert"));
        assert_eq!(
            store.claim_tick("e", 5_000).await.expect("claim"),
            Claim::Taken
        );
        assert_eq!(
            store.claim_tick("e", 6_000).await.expect("claim"),
            Claim::Won
        );
        // A second upsert keeps the claims and the last run.
        store
            .record_run("e", 6_000, Uuid::nil(), Some(7_000))
            .await
            .expect("record");
        assert!(!store.upsert(&spec("e"), 9_000).await.expect("upsert"));
        let e = store.get("e").await.expect("get").expect("exists");
        assert_eq!(e.last_run, Some(from_ms(6_000)));
        assert_eq!(e.next_run, Some(from_ms(2_000)));
        assert_eq!(
            store.claim_tick("e", 7_000).await.expect("claim"),
            Claim::Won
        );
    }

    #[tokio::test]
    async fn pause_resume_remove() {
        let store = MemoryPeriodicStore::new();
        store.upsert(&spec("e"), 0).await.expect("upsert");
        assert!(store.pause("e").await.expect("pause"));
        assert!(store.get("e").await.expect("get").expect("exists").paused);
        assert_eq!(
            store.claim_tick("e", 1_000).await.expect("claim"),
            Claim::Paused
        );
        assert!(store.resume("e", 10_000).await.expect("resume"));
        assert!(!store.get("e").await.expect("get").expect("exists").paused);
        // Ticks that fell in the pause stay unclaimable.
        assert_eq!(
            store.claim_tick("e", 9_000).await.expect("claim"),
            Claim::Taken
        );
        assert_eq!(
            store.claim_tick("e", 11_000).await.expect("claim"),
            Claim::Won
        );
        assert!(store.remove("e").await.expect("remove"));
        assert!(!store.remove("e").await.expect("remove"));
        assert!(!store.pause("e").await.expect("pause"));
        assert!(!store.resume("e", 0).await.expect("resume"));
        assert_eq!(
            store.claim_tick("e", 12_000).await.expect("claim"),
            Claim::Missing
        );
        // Recording a run does not bring a removed entry back.
        store
            .record_run("e", 12_000, Uuid::nil(), None)
            .await
            .expect("record");
        assert!(store.get("e").await.expect("get").is_none());
        assert!(store.list().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn list_is_sorted_and_records_runs() {
        let store = MemoryPeriodicStore::new();
        for name in ["b", "a", "c"] {
            store.upsert(&spec(name), 0).await.expect("upsert");
        }
        let task = Uuid::now_v7();
        store
            .record_run("a", 3_000, task, Some(4_000))
            .await
            .expect("record");
        // An older run does not overwrite a newer one.
        store
            .record_run("a", 2_000, Uuid::nil(), Some(3_000))
            .await
            .expect("record");
        let list = store.list().await.expect("list");
        let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(list[0].last_task, Some(task));
        assert_eq!(list[0].last_run, Some(from_ms(3_000)));
        assert_eq!(list[0].next_run, Some(from_ms(4_000)));
        assert_eq!(list[0].spec, "@every 1s");
        assert_eq!(list[0].timezone, "UTC");
        assert_eq!(list[1].last_run, None);
    }

    #[test]
    fn one_store_per_server() {
        let a = Server::memory();
        let b = Server::memory();
        let a1 = MemoryPeriodicStore::for_server(&a);
        let a2 = MemoryPeriodicStore::for_server(&a.clone());
        let b1 = MemoryPeriodicStore::for_server(&b);
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b1));
    }
}

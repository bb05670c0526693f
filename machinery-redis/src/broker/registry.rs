//! The worker registry: one record per live worker, with a TTL, and an index of them.

use std::time::Duration;

use machinery_core::inspect::WorkerInfo;
use machinery_core::{Result as CoreResult, codec};

use super::{RedisBroker, millis};
use crate::error::Error;
use crate::scripts::RegisterArgs;

impl RedisBroker {
    /// Writes `info` (MessagePack) for `ttl`, and indexes it (`worker_register.lua`).
    pub(crate) async fn register(&self, info: &WorkerInfo, ttl: Duration) -> CoreResult<()> {
        let record = codec::to_vec_named(info, "worker record")?;
        let args = RegisterArgs {
            id: &info.id,
            record: &record,
            ttl_ms: millis(ttl),
        };
        let _: i64 = args
            .invocation(&self.engine.scripts, &self.engine.keys)
            .invoke_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// Deletes worker `id`'s record and its index entry.
    pub(crate) async fn unregister(&self, id: &str) -> CoreResult<()> {
        let () = redis::pipe()
            .cmd("DEL")
            .arg(self.engine.keys.worker(id))
            .ignore()
            .cmd("ZREM")
            .arg(self.engine.keys.workers())
            .arg(id)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// The records that have not expired, by name then id. Index entries whose record
    /// expired are dropped; a record that does not decode (written by an incompatible
    /// version) is left out with a warning.
    pub(crate) async fn live_workers(&self) -> CoreResult<Vec<WorkerInfo>> {
        let keys = &self.engine.keys;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.workers())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One slot (`{workers}`): one MGET.
        let records: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(ids.iter().map(|id| keys.worker(id)).collect::<Vec<_>>())
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        let mut workers = Vec::with_capacity(ids.len());
        let mut expired = Vec::new();
        for (id, record) in ids.iter().zip(records) {
            match record {
                None => expired.push(id),
                Some(bytes) => match codec::from_slice::<WorkerInfo>(&bytes, "worker record") {
                    Ok(w) => workers.push(w),
                    Err(e) => {
                        tracing::warn!(worker = %id, error = %e, "skipping a worker record that does not decode");
                    }
                },
            }
        }
        if !expired.is_empty() {
            let _: i64 = redis::cmd("ZREM")
                .arg(keys.workers())
                .arg(expired)
                .query_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
        }
        workers.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(workers)
    }
}

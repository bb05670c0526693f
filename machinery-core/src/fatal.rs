//! How long-running loops (a worker's fetch, heartbeat and completion loops, a periodic
//! scheduler) stop on a permanent error instead of retrying it forever.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// The first permanent error met by a set of loops. Recording it logs one error line
/// and cancels the loops' stop token; the handle that joins them returns it.
#[derive(Debug)]
pub(crate) struct Fatal {
    /// What stops (`worker`, `periodic scheduler`), for the log line.
    who: &'static str,
    error: Mutex<Option<Error>>,
    stop: CancellationToken,
}

impl Fatal {
    pub(crate) fn new(who: &'static str, stop: CancellationToken) -> Self {
        Fatal {
            who,
            error: Mutex::new(None),
            stop,
        }
    }

    /// Records `error`, met by `what` (`fetch`, `heartbeat`, …), and stops the loops. Only
    /// the first error is logged and kept: the loops may each meet the same cause.
    pub(crate) fn fail(&self, what: &'static str, error: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(
                error = %error,
                kind = %error.kind(),
                "{what} failed with a permanent error; the {} stops",
                self.who
            );
            *slot = Some(error);
        } else {
            tracing::debug!(error = %error, "{what} failed after the {} began stopping", self.who);
        }
        drop(slot);
        self.stop.cancel();
    }

    /// The error that stopped the loops, if one did.
    pub(crate) fn take(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

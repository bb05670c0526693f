//! When a fetched task is recorded as STARTED, and what its final state waits for.
//!
//! The tasks of one fetched batch start together. Those still running
//! [`Config::started_after`](crate::Config::started_after) later are recorded as STARTED
//! in one write for the batch; a task that finished before is not (its STARTED could
//! only have been seen for a few milliseconds), so the common short task costs the
//! result backend one write less and its result one round trip less.
//!
//! A task picked for the STARTED write waits for that write before its final state is
//! settled, so a late STARTED never overwrites a result. Each task's phase is one
//! atomic: whichever of the task (finishing) and the writer (picking it) changes it
//! first decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::engine::ResultBackend;
use crate::result::TaskState;

/// The task runs and nobody picked it for the STARTED write yet.
const RUNNING: u8 = 0;
/// The task finished first: no STARTED is written for it.
const FINISHED: u8 = 1;
/// The task is in the STARTED write: its final state waits for that write.
const PICKED: u8 = 2;

/// The phases of one batch's tasks, and whether its STARTED write is done.
struct Batch {
    phases: Box<[AtomicU8]>,
    written: watch::Receiver<bool>,
}

/// A task's STARTED state, built only when the task is picked for the write (most
/// tasks finish before, and never need one).
pub(crate) trait StartedState: Send + 'static {
    /// The state to write.
    fn build(self) -> TaskState;
}

impl StartedState for TaskState {
    fn build(self) -> TaskState {
        self
    }
}

/// One task's place in its batch's STARTED write.
pub(crate) struct StartGate {
    slot: Option<(Arc<Batch>, usize)>,
}

impl StartGate {
    /// For a task no STARTED is written for (it does not decode, or no task of its
    /// name is registered here).
    pub(crate) fn none() -> Self {
        StartGate { slot: None }
    }

    /// Called once the task's final state is known, before it is settled: returns at
    /// once when the task finished before it was picked for the STARTED write (it never
    /// will be now), else when that write is done (or its writer is gone).
    pub(crate) async fn finished(&mut self) {
        let Some((batch, index)) = self.slot.take() else {
            return;
        };
        let phase = &batch.phases[index];
        if phase
            .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
        let mut written = batch.written.clone();
        // An error means the writer is gone (aborted at shutdown): nothing to wait for.
        let _ = written.wait_for(|done| *done).await;
    }
}

/// Schedules the STARTED write of a fetched batch `after` from now, on `tracker`:
/// `states` holds, per delivery, its STARTED state (built when picked), or `None` when
/// none is written for it. Returns each delivery's gate, in the order of `states`. With `after` zero, every
/// task is in the write, which starts at once.
pub(crate) fn schedule<S: StartedState>(
    tracker: &TaskTracker,
    backend: Arc<dyn ResultBackend>,
    states: Vec<Option<S>>,
    after: Duration,
) -> Vec<StartGate> {
    let mut gates: Vec<StartGate> = states.iter().map(|_| StartGate::none()).collect();
    let states: Vec<(usize, S)> = states
        .into_iter()
        .enumerate()
        .filter_map(|(i, state)| Some((i, state?)))
        .collect();
    if states.is_empty() {
        return gates;
    }
    let initial = if after.is_zero() { PICKED } else { RUNNING };
    let (done, written) = watch::channel(false);
    let batch = Arc::new(Batch {
        phases: states.iter().map(|_| AtomicU8::new(initial)).collect(),
        written,
    });
    for (index, (delivery, _)) in states.iter().enumerate() {
        gates[*delivery].slot = Some((batch.clone(), index));
    }
    tracker.spawn(async move {
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
        let picked: Vec<TaskState> = states
            .into_iter()
            .zip(batch.phases.iter())
            .filter(|(_, phase)| pick(phase))
            .map(|((_, state), _)| state.build())
            .collect();
        if !picked.is_empty()
            && let Err(e) = backend.store(&picked).await
        {
            tracing::warn!(error = %e, "could not record STARTED states");
        }
        done.send_replace(true);
    });
    gates
}

/// Puts a still running task into the STARTED write; false when it already finished.
fn pick(phase: &AtomicU8) -> bool {
    match phase.compare_exchange(RUNNING, PICKED, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(current) => current == PICKED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::result::State;

    #[test]
    fn the_first_to_change_a_phase_decides() {
        let running = AtomicU8::new(RUNNING);
        assert!(pick(&running));
        assert!(pick(&running), "picking twice keeps it picked");
        let finished = AtomicU8::new(FINISHED);
        assert!(!pick(&finished));
    }

    #[tokio::test]
    async fn a_task_without_a_slot_never_waits() {
        StartGate::none().finished().await;
    }

    fn states(n: usize) -> Vec<TaskState> {
        (0..n)
            .map(|_| TaskState::new(uuid::Uuid::now_v7(), "t", "q", State::Started))
            .collect()
    }

    fn each(states: &[TaskState]) -> Vec<Option<TaskState>> {
        states.iter().cloned().map(Some).collect()
    }

    async fn stored(backend: &MemoryBackend, state: &TaskState) -> Option<State> {
        backend
            .load("q", state.uuid)
            .await
            .expect("memory backend")
            .map(|s| s.state)
    }

    #[tokio::test]
    async fn only_tasks_still_running_after_the_delay_are_recorded() {
        let tracker = TaskTracker::new();
        let backend = Arc::new(MemoryBackend::new(None));
        let batch = states(2);
        let mut gates = schedule(
            &tracker,
            backend.clone(),
            each(&batch),
            Duration::from_millis(50),
        );
        let mut slow = gates.pop().expect("two gates");
        let mut fast = gates.pop().expect("two gates");
        // Finishes before the delay: no wait, and no STARTED ever.
        tokio::time::timeout(Duration::from_millis(20), fast.finished())
            .await
            .expect("a task finished before the delay does not wait");
        // Still running when the write happens: it is recorded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stored(&backend, &batch[1]).await != Some(State::Started) {
            assert!(tokio::time::Instant::now() < deadline, "never recorded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        slow.finished().await;
        assert_eq!(stored(&backend, &batch[0]).await, None);
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn no_delay_records_every_task_before_its_result() {
        let tracker = TaskTracker::new();
        let backend = Arc::new(MemoryBackend::new(None));
        let batch = states(3);
        let gates = schedule(&tracker, backend.clone(), each(&batch), Duration::ZERO);
        for mut gate in gates {
            gate.finished().await;
        }
        for state in &batch {
            assert_eq!(stored(&backend, state).await, Some(State::Started));
        }
    }
}

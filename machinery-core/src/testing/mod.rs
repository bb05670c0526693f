//! The engine conformance suite: every behaviour of the single-task feature set,
//! written once and run on every engine (behind the `test-util` feature).
//!
//! An engine crate runs it from a test file:
//!
//! ```ignore
//! // tests/conformance.rs of an engine crate
//! async fn server(config: machinery_core::Config) -> machinery_core::Server {
//!     /* connect a fresh, isolated server for one test */
//! }
//! machinery_core::conformance_suite!(server);
//! ```
//!
//! Each test asks the harness for a fresh server with the configuration it needs; the
//! harness must isolate servers from each other (memory: a new engine; Redis: a new key
//! prefix). The suite's tasks are registered under names starting with `conformance.`.

pub mod progress;
pub mod rate;
pub mod revoke;
pub mod suite;
pub mod tasks;
pub mod unique;
pub mod workflow;

use std::future::Future;

use crate::config::Config;
use crate::registry::BoxFuture;
use crate::server::Server;

/// Makes a fresh, isolated server for one test.
pub trait Harness: Send + Sync {
    /// A server with `config` (the harness fills in the engine URLs and isolation).
    fn server(&self, config: Config) -> BoxFuture<Server>;
}

impl<F, Fut> Harness for F
where
    F: Fn(Config) -> Fut + Send + Sync,
    Fut: Future<Output = Server> + Send + 'static,
{
    fn server(&self, config: Config) -> BoxFuture<Server> {
        Box::pin(self(config))
    }
}

/// Runs a test body on a fresh multi-threaded runtime, failing it after two minutes
/// rather than hanging.
///
/// # Panics
/// When the runtime cannot be built or the body takes longer than two minutes.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub fn block_on<F: Future<Output = ()>>(body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(120), body)
            .await
            .expect("test took longer than two minutes");
    });
}

/// The memory engine's harness.
pub async fn memory(config: Config) -> Server {
    Server::memory_with(config)
}

/// Declares one `#[tokio::test]` per conformance test, each calling `$harness`
/// (an `async fn(Config) -> Server` or any [`Harness`]).
#[macro_export]
macro_rules! conformance_suite {
    ($harness:path) => {
        $crate::conformance_suite!(@tests $harness;
            send_and_get, pending_then_success, failure_is_reported, retries_until_success,
            retries_exhausted, retry_in_counts_against_budget, fibonacci_backoff_is_observed,
            panic_becomes_failure, timeout_becomes_failure, unregistered_is_dead_lettered,
            unregistered_can_be_ignored, garbage_is_dead_lettered, schema_mismatch_names_both,
            bad_args_fail, delayed_tasks_wait, pending_tasks_listed, priority_runs_first,
            several_queues, result_ttl_expires, results_kept_forever, graceful_shutdown_loses_nothing,
            abort_hands_tasks_back, hooks_run, context_is_visible, blocking_tasks_run,
            concurrency_is_bounded, unlimited_concurrency, unlimited_concurrency_holds_a_bounded_backlog,
            message_too_large, get_timeout_is_distinct,
            dead_letters_requeue_and_purge, lease_expiry_redelivers, heartbeat_keeps_lease,
            wf_chain, wf_group, wf_group_limited, wf_chord, wf_chord_failing_member,
            wf_chain_failure_stops, wf_large_chord, wf_racing_chords, wf_nested, wf_callbacks,
            wf_across_queues,
            outcome_follow_up_too_large_fails, outcome_chord_callback_retry_same_input,
            outcome_dead_lettered_step_fails_chain, outcome_over_delivered_step_fails_chain,
            outcome_extreme_durations, outcome_timeout_names_state,
            final_state_stays, open_states_outlive_the_results_ttl,
            chord_outlives_the_results_ttl, ends_chord_starts_the_chord_ttl,
            dead_letter_with_the_state, dead_letter_completion_is_fenced, forget_wakes_waiters,
            lookup_in_any_queue, lookup_waits_for_the_task,
            lookup_unknown_is_missing, saved_handles_restore, lookup_finds_later_steps,
            wf_long_chain, wf_long_chain_failure, wf_chord_step_then_more,
            wf_empty_chord, wf_deep_callbacks_refused, outcome_member_of_unknown_chord,
            outcome_extreme_counters, outcome_callbacks_and_groups_are_found,
            engine_step_by_step_settles,
            admin_queues_counts, admin_pending_pages, admin_delayed_pages, admin_in_flight_pages,
            admin_dead_letters_one_by_one, admin_failed_list, admin_invalid_cursor,
            admin_find_and_delete_pending, admin_purge_leaves_in_flight_and_dead,
            admin_pause_holds_fetch, admin_pause_stops_worker, admin_worker_registry,
            admin_stats_record_and_merge
        );
        // Task control (revoke and expiry, unique tasks, rate limits, progress): one
        // list per module of the suite.
        $crate::conformance_suite!(@tests $harness;
            revoke_pending, revoke_delayed, revoke_running_cooperative, revoke_running_aborted,
            revoke_blocking_sees_flag, revoke_finished, revoke_unknown_then_sent,
            revoke_survives_restart, revoke_chain_step, revoke_chord_member,
            revoke_races_completion, revoke_refuses_completion, expired_never_runs
        );
        $crate::conformance_suite!(@tests $harness;
            unique_by_name_and_args, unique_key_is_explicit, unique_duplicate_returns_holder,
            unique_released_when_finished, unique_kept_while_retrying,
            unique_until_ttl_outlives_the_task, unique_ttl_frees_a_pending_lock,
            unique_with_uuid_deduplicates, unique_task_attribute, unique_in_a_batch,
            unique_delayed_holds_the_lock, unique_ignored_in_workflows,
            unique_race_of_fifty_senders, unique_revoked_holder_frees_the_key
        );
        $crate::conformance_suite!(@tests $harness;
            rate_task_limit_spaces_starts, rate_two_workers_share_a_limit,
            rate_queue_limit_spaces_any_task, rate_task_and_queue_limits_both_hold,
            rate_backlog_waits_without_spinning, rate_unlimited_tasks_never_reserve
        );
        $crate::conformance_suite!(@tests $harness;
            progress_read_back, progress_stream_follows_and_ends,
            progress_stream_of_finished_tasks_ends, progress_stream_ends_at_failure,
            progress_is_coalesced, progress_from_blocking_tasks,
            progress_unencodable_is_not_fatal, progress_of_unknown_task,
            progress_outlives_the_task_until_the_ttl
        );
        $crate::conformance_suite!(@tests $harness;
            workflow_chain_shows_each_step, workflow_found_from_any_part,
            workflow_chord_counts_states, workflow_group_member_chain,
            workflow_absent_for_a_plain_task
        );
    };
    (@tests $harness:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testing::block_on($crate::testing::suite::$name(&$harness));
            }
        )*
    };
}

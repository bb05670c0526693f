//! Conformance tests of workflow records: a sent chain, group or chord shown as its
//! parts with their states ([`Inspector::workflow`](crate::inspect::Inspector::workflow)).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use uuid::Uuid;

use super::Harness;
use super::tasks::{add, at_most, sum};
use crate::config::Config;
use crate::inspect::{
    Inspector, StateCount, WorkflowGroup, WorkflowInfo, WorkflowKind, WorkflowStep, WorkflowTask,
};
use crate::result::State;
use crate::server::Server;
use crate::worker::{Worker, WorkerHandle};

const WAIT: Duration = Duration::from_secs(20);

async fn server<H: Harness>(h: &H) -> Server {
    h.server(Config::default()).await
}

fn worker(server: &Server) -> WorkerHandle {
    Worker::auto()
        .server(server)
        .grace_period(Duration::from_secs(10))
        .spawn()
        .expect("worker starts")
}

/// Loads workflow `uuid` until `done` holds for it, for at most [`WAIT`].
async fn workflow_until(
    inspector: &Inspector,
    uuid: Uuid,
    what: &str,
    done: impl Fn(&WorkflowInfo) -> bool,
) -> WorkflowInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = inspector.workflow(uuid).await.unwrap();
        match info {
            Some(info) if done(&info) => return info,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "workflow {uuid}: {what} not seen within {WAIT:?}; last seen: {other:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn task(step: &WorkflowStep) -> &WorkflowTask {
    match step {
        WorkflowStep::Task(t) => t,
        other => panic!("expected a task step, got {other:?}"),
    }
}

fn group(step: &WorkflowStep) -> &WorkflowGroup {
    match step {
        WorkflowStep::Group(g) => g,
        other => panic!("expected a group step, got {other:?}"),
    }
}

fn settled(info: &WorkflowInfo) -> bool {
    info.steps.iter().all(|s| match s {
        WorkflowStep::Task(t) => t.state.is_some_and(State::is_terminal),
        WorkflowStep::Group(g) => {
            g.callback
                .as_ref()
                .is_none_or(|c| c.state.is_some_and(State::is_terminal))
                && g.states
                    .iter()
                    .all(|c| c.state.is_some_and(State::is_terminal))
        }
    })
}

/// A chain of three whose middle step fails: SUCCESS, FAILURE, and the third marked
/// FAILURE without running.
pub async fn workflow_chain_shows_each_step<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let chain = add::s(5, 5)
        .then(at_most::partial(3))
        .then(add::partial(1))
        .send_with(&server)
        .await
        .unwrap();
    assert!(chain.get_timeout(WAIT).await.is_err());
    let id = chain.workflow().expect("a sent chain knows its workflow");
    let inspector = server.inspect().unwrap();
    let info = workflow_until(&inspector, id, "every step final", settled).await;
    assert_eq!(info.id, id);
    assert_eq!(info.kind, WorkflowKind::Chain);
    assert_eq!(info.steps.len(), 3, "{info:?}");
    let steps: Vec<&WorkflowTask> = info.steps.iter().map(task).collect();
    assert_eq!(
        steps.iter().map(|t| t.uuid).collect::<Vec<_>>(),
        chain.steps()
    );
    assert_eq!(
        steps.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        [add::NAME, at_most::NAME, add::NAME]
    );
    assert_eq!(
        steps.iter().map(|t| t.state).collect::<Vec<_>>(),
        [
            Some(State::Success),
            Some(State::Failure),
            Some(State::Failure)
        ]
    );
    let queue = &server.config().default_queue;
    assert!(steps.iter().all(|t| &t.queue == queue), "{steps:?}");
    w.shutdown().await.unwrap();
}

/// Every step's UUID, and the workflow id, find the same workflow; each step's stored
/// state and task info name it.
pub async fn workflow_found_from_any_part<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let chain = add::s(1, 2)
        .then(add::partial(3))
        .then(add::partial(4))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 10);
    let id = chain.workflow().unwrap();
    let inspector = server.inspect().unwrap();
    let whole = inspector.workflow(id).await.unwrap().expect("found by id");
    for uuid in chain.steps() {
        let found = inspector.workflow(*uuid).await.unwrap();
        assert_eq!(found.as_ref(), Some(&whole), "found from step {uuid}");
        let state = server.backend().load("", *uuid).await.unwrap().unwrap();
        assert_eq!(state.workflow, Some(id), "the state of step {uuid}");
        let info = inspector.task(*uuid).await.unwrap().unwrap();
        assert_eq!(info.workflow, Some(id), "the task info of step {uuid}");
    }
    // A pending step's message carries the id too, before any state is final.
    let pending = add::s(1, 1)
        .delay(Duration::from_secs(3600))
        .then(add::partial(1))
        .send_with(&server)
        .await
        .unwrap();
    let first = pending.steps()[0];
    let info = inspector.workflow(first).await.unwrap().expect("found");
    assert_eq!(Some(info.id), pending.workflow());
    assert_eq!(task(&info.steps[0]).state, Some(State::Pending));
    w.shutdown().await.unwrap();
}

/// A chord is one group step: its members counted per state, the first 50 listed, and
/// its callback with its state.
pub async fn workflow_chord_counts_states<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    // 58 members succeed, 2 fail (10 is over 3).
    let members = (0..60).map(|i| {
        if i % 30 == 29 {
            at_most::s(3, 10)
        } else {
            at_most::s(100, i)
        }
    });
    let chord = crate::group(members)
        .chord(sum::partial())
        .send_with(&server)
        .await
        .unwrap();
    assert!(chord.get_timeout(WAIT).await.is_err());
    let inspector = server.inspect().unwrap();
    let callback = chord.callback().uuid();
    let info = workflow_until(&inspector, callback, "every member final", settled).await;
    assert_eq!(info.kind, WorkflowKind::Chord);
    assert_eq!(info.steps.len(), 1, "{info:?}");
    let g = group(&info.steps[0]);
    assert_eq!(g.group, chord.uuid());
    assert_eq!(g.count, 60);
    assert_eq!(
        g.states,
        [
            StateCount {
                state: Some(State::Success),
                count: 58
            },
            StateCount {
                state: Some(State::Failure),
                count: 2
            }
        ]
    );
    assert_eq!(g.members.len(), crate::inspect::WORKFLOW_MEMBERS_SHOWN);
    assert_eq!(g.members[29].state, Some(State::Failure));
    assert_eq!(g.members[29].tasks[0].name, at_most::NAME);
    let cb = g.callback.as_ref().expect("a chord has a callback");
    assert_eq!(cb.uuid, callback);
    assert_eq!(cb.name, sum::NAME);
    assert_eq!(cb.state, Some(State::Failure));
    // A member's UUID finds the chord too.
    let member = g.members[0].tasks[0].uuid;
    let again = inspector.workflow(member).await.unwrap().unwrap();
    assert_eq!(again.id, info.id);
    w.shutdown().await.unwrap();
}

/// A group whose member is a chain lists the chain's tasks; the member counts in the
/// state of its first task that has not succeeded.
pub async fn workflow_group_member_chain<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let g = crate::group([
        add::s(1, 1).then(add::partial(1)),
        add::s(2, 2).then(add::partial(2)),
    ])
    .send_with(&server)
    .await
    .unwrap();
    assert_eq!(g.get_timeout(WAIT).await.unwrap(), vec![3, 6]);
    let inspector = server.inspect().unwrap();
    let last = g.members()[1].uuid();
    let info = workflow_until(&inspector, last, "every member final", settled).await;
    assert_eq!(info.kind, WorkflowKind::Group);
    let step = group(&info.steps[0]);
    assert_eq!(step.count, 2);
    assert!(step.callback.is_none());
    assert_eq!(step.members[1].tasks.len(), 2);
    assert_eq!(step.members[1].tasks[1].uuid, last);
    assert_eq!(
        step.states,
        [StateCount {
            state: Some(State::Success),
            count: 2
        }]
    );
    w.shutdown().await.unwrap();
}

/// A task sent on its own is part of no workflow, and costs no record.
pub async fn workflow_absent_for_a_plain_task<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let r = add::s(2, 3).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 5);
    assert_eq!(r.task_state().await.unwrap().workflow, None);
    let inspector = server.inspect().unwrap();
    assert_eq!(inspector.workflow(r.uuid()).await.unwrap(), None);
    assert_eq!(
        inspector.task(r.uuid()).await.unwrap().unwrap().workflow,
        None
    );
    assert_eq!(inspector.workflow(Uuid::now_v7()).await.unwrap(), None);
    w.shutdown().await.unwrap();
}

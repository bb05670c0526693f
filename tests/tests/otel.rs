//! OpenTelemetry export of task spans (machinery-core's `otel` feature): the parent and
//! child links of workflows sent inside a producer's span, read back from an in-memory
//! exporter.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use machinery_core::prelude::*;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, TraceId, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::prelude::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

#[task(name = "otel.step")]
async fn step(n: u64) -> Result<u64, TaskError> {
    tracing::info!(n, "step runs");
    Ok(n + 1)
}

#[task(name = "otel.member")]
async fn member(n: u64) -> Result<u64, TaskError> {
    tracing::info!(n, "member runs");
    Ok(n * 10)
}

#[task(name = "otel.total")]
async fn total(values: Vec<u64>) -> Result<u64, TaskError> {
    Ok(values.iter().sum())
}

#[task(name = "otel.fails")]
async fn fails() -> Result<(), TaskError> {
    Err(TaskError::fatal("on purpose"))
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// Sends `step(n)` from inside a span of its own, nested in the task's span.
#[task(name = "otel.nested_sender")]
async fn nested_sender(n: u64) -> Result<u64, TaskError> {
    let server = SERVER.get().ok_or_else(|| TaskError::msg("no server"))?;
    let sent = async { step::s(n).send_with(server).await }
        .instrument(tracing::info_span!("inner"))
        .await
        .map_err(|e| TaskError::msg(e.to_string()))?;
    sent.get_timeout(WAIT)
        .await
        .map_err(|e| TaskError::msg(e.to_string()))
}

/// The process-wide subscriber: an OpenTelemetry layer exporting to memory.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("machinery-tests");
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .try_init()
            .expect("the only subscriber of this test binary");
        exporter
    })
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The first exported span that `matches`, waiting for it to end (a run's span ends a
/// moment after its result is stored).
async fn wait_span(what: &str, matches: impl Fn(&SpanData) -> bool) -> SpanData {
    let deadline = Instant::now() + WAIT;
    loop {
        let spans = exporter().get_finished_spans().expect("spans");
        if let Some(s) = spans.into_iter().find(|s| matches(s)) {
            return s;
        }
        assert!(Instant::now() < deadline, "no span: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The exported span of the run of task `uuid`.
async fn span_of(uuid: Uuid) -> SpanData {
    let id = uuid.to_string();
    wait_span(&format!("task {id}"), |s| {
        attribute(s, "task.id").as_deref() == Some(&id)
    })
    .await
}

/// The trace and span id of a tracing span, as exported.
fn ids(span: &tracing::Span) -> (TraceId, SpanId) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    assert!(sc.is_valid(), "the producer span is exported");
    (sc.trace_id(), sc.span_id())
}

fn server() -> Server {
    exporter();
    SERVER.get_or_init(Server::memory).clone()
}

fn worker(server: &Server) -> machinery_core::WorkerHandle {
    Worker::new()
        .task(step::ENTRY)
        .task(member::ENTRY)
        .task(total::ENTRY)
        .task(fails::ENTRY)
        .task(nested_sender::ENTRY)
        .server(server)
        .concurrency(8)
        .spawn()
        .expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_continues_the_producers_trace_step_by_step() {
    let server = server();
    let worker = worker(&server);
    let producer = tracing::info_span!("producer");
    let (trace, producer_id) = ids(&producer);
    let chain = step::s(1)
        .then(step::partial())
        .then(step::partial())
        .send_with(&server)
        .instrument(producer.clone())
        .await
        .expect("sent");
    assert_eq!(chain.get_timeout(WAIT).await.expect("ran"), 4);

    let steps = chain.steps().to_vec();
    assert_eq!(steps.len(), 3);
    let mut spans = Vec::new();
    for uuid in steps {
        spans.push(span_of(uuid).await);
    }
    for s in &spans {
        assert_eq!(s.span_context.trace_id(), trace, "the producer's trace");
        assert_eq!(s.name, "otel.step", "named after the task");
        assert_eq!(s.span_kind, SpanKind::Consumer);
        assert!(s.parent_span_is_remote, "the parent came in a message");
        // The span's own fields name the exported ids, for logs.
        assert_eq!(
            attribute(s, "trace_id"),
            Some(format!("{}", s.span_context.trace_id()))
        );
        assert_eq!(
            attribute(s, "span_id"),
            Some(format!("{}", s.span_context.span_id()))
        );
        assert_eq!(
            attribute(s, "queue"),
            Some(server.config().default_queue.clone())
        );
        assert!(
            s.events.iter().any(|e| e.name == "step runs"),
            "the task's own log is in its span: {:?}",
            s.events
        );
    }
    assert_eq!(spans[0].parent_span_id, producer_id, "step 1: the producer");
    assert_eq!(spans[1].parent_span_id, spans[0].span_context.span_id());
    assert_eq!(spans[2].parent_span_id, spans[1].span_context.span_id());
    worker.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_and_its_callback_stay_in_the_producers_trace() {
    let server = server();
    let worker = worker(&server);
    let producer = tracing::info_span!("producer");
    let (trace, producer_id) = ids(&producer);
    // A chord after a step: the step sends the members; the callback, registered when
    // the workflow is sent, names the producer.
    let first = step::s(1);
    let first_uuid = first.uuid();
    let flow = first
        .then(group(vec![member::s(1), member::s(2)]).chord(total::partial()))
        .send_with(&server)
        .instrument(producer.clone())
        .await
        .expect("sent");
    assert_eq!(flow.get_timeout(WAIT).await.expect("ran"), 30);

    let first = span_of(first_uuid).await;
    assert_eq!(first.parent_span_id, producer_id);
    let mut members = Vec::new();
    for uuid in flow.steps().iter().skip(1).take(2) {
        members.push(span_of(*uuid).await);
    }
    let callback = span_of(flow.last().uuid()).await;
    assert_eq!(callback.name, "otel.total");
    for m in &members {
        assert_eq!(m.name, "otel.member");
        assert_eq!(m.span_context.trace_id(), trace);
        assert_eq!(
            m.parent_span_id,
            first.span_context.span_id(),
            "members are sent by the step before them"
        );
    }
    assert_eq!(callback.span_context.trace_id(), trace);
    assert_eq!(
        callback.parent_span_id, producer_id,
        "the callback names the span that sent the chord"
    );
    let chord = attribute(&callback, "chord");
    assert!(chord.is_some(), "the callback names its chord");
    for m in &members {
        assert_eq!(attribute(m, "group"), chord, "members name their chord");
    }

    // A chord sent on its own: members and callback are children of the producer.
    let producer = tracing::info_span!("producer");
    let (trace, producer_id) = ids(&producer);
    let chord = group(vec![member::s(3), member::s(4)])
        .chord(total::partial())
        .send_with(&server)
        .instrument(producer.clone())
        .await
        .expect("sent");
    assert_eq!(chord.get_timeout(WAIT).await.expect("ran"), 70);
    let callback = span_of(chord.callback().uuid()).await;
    assert_eq!(callback.span_context.trace_id(), trace);
    assert_eq!(callback.parent_span_id, producer_id);
    worker.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_inside_a_tasks_own_span_names_that_span() {
    let server = server();
    let worker = worker(&server);
    let sender = nested_sender::s(5);
    let sender_uuid = sender.uuid();
    let sent = sender.send_with(&server).await.expect("sent");
    assert_eq!(sent.get_timeout(WAIT).await.expect("ran"), 6);
    let outer = span_of(sender_uuid).await;
    // Sent outside any span: a trace of its own, with no parent.
    assert_eq!(outer.parent_span_id, SpanId::INVALID);
    let inner = wait_span("the task's own span, inside the task's", |s| {
        s.name == "inner" && s.parent_span_id == outer.span_context.span_id()
    })
    .await;
    let child = wait_span("the child, whose parent is the inner span", |s| {
        s.name == "otel.step" && s.parent_span_id == inner.span_context.span_id()
    })
    .await;
    assert_eq!(child.span_context.trace_id(), outer.span_context.trace_id());

    // A failed run's span carries an error status.
    let failing = fails::s();
    let uuid = failing.uuid();
    let _ = failing
        .send_with(&server)
        .await
        .expect("sent")
        .get_timeout(WAIT)
        .await;
    assert!(matches!(span_of(uuid).await.status, Status::Error { .. }));
    worker.shutdown().await.expect("stops");
}

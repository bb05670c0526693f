//! The generated encoders and handler at run time: the wire form is a positional array
//! (the same bytes as a tuple), and the handler decodes it, calls the function and
//! encodes its result.
use machinery_core::__private::{Invocation, rmp_serde};
use machinery_core::TaskEntry;
use machinery_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    x: i64,
    y: i64,
}

#[task]
async fn add(ctx: TaskContext, a: i64, b: i64) -> Result<i64, TaskError> {
    assert_eq!(ctx.name(), "add");
    Ok(a + b)
}

#[task]
fn shift(point: Point, by: i64) -> Result<Point, TaskError> {
    Ok(Point {
        x: point.x + by,
        y: point.y + by,
    })
}

#[task]
async fn echo(text: String) -> Result<String, TaskError> {
    Ok(text)
}

#[task]
async fn nothing() -> Result<(), TaskError> {
    Ok(())
}

#[task]
async fn fails(code: u8) -> Result<u8, std::io::Error> {
    Err(std::io::Error::other(format!("code {code}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("encodes")
}

async fn run(entry: &TaskEntry, args: Vec<u8>) -> Result<Vec<u8>, TaskError> {
    let ctx = TaskContext::detached(entry.name());
    (entry.handler)(Invocation { args, ctx }).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Senders: a positional array of the arguments, without the context.
    assert_eq!(add::s(1, 2).raw().args, encode(&(1i64, 2i64)));
    let p = Point { x: 1, y: 2 };
    assert_eq!(
        shift::s(p.clone(), 5).raw().args,
        encode(&(p.clone(), 5i64))
    );
    assert_eq!(echo::s("hi".into()).raw().args, encode(&("hi",)));
    assert_eq!(nothing::s().raw().args, [0x90]);

    // Handlers: decode, call, encode.
    let out = run(&add::ENTRY, encode(&(2i64, 3i64))).await.expect("runs");
    assert_eq!(rmp_serde::from_slice::<i64>(&out).expect("decodes"), 5);
    let out = run(&shift::ENTRY, encode(&(p, 1i64))).await.expect("runs");
    assert_eq!(
        rmp_serde::from_slice::<Point>(&out).expect("decodes"),
        Point { x: 2, y: 3 }
    );
    let out = run(&echo::ENTRY, encode(&("hi",))).await.expect("runs");
    assert_eq!(
        rmp_serde::from_slice::<String>(&out).expect("decodes"),
        "hi"
    );
    // No arguments: an empty array, or `()` (nil).
    run(&nothing::ENTRY, vec![0x90]).await.expect("runs");
    run(&nothing::ENTRY, encode(&())).await.expect("runs");

    // The function's error becomes the task's error.
    let err = run(&fails::ENTRY, encode(&(7u8,)))
        .await
        .expect_err("fails");
    assert!(err.to_string().contains("code 7"), "{err}");

    // Arguments that do not match the schema are refused, naming it.
    for bad in [encode(&(1i64,)), encode(&("x", 2i64)), vec![0xc1]] {
        let err = run(&add::ENTRY, bad).await.expect_err("refused");
        assert!(err.to_string().contains("add(i64, i64) -> i64"), "{err}");
    }

    // Typed lookups need a server: none is installed yet.
    let uuid = machinery_core::__private::Uuid::now_v7();
    assert!(matches!(
        add::result(uuid),
        Err(machinery_core::Error::NoDefaultServer)
    ));

    // Through a worker on the memory engine, found by `Worker::auto`.
    let server = Server::memory();
    server.install();
    let worker = Worker::auto().spawn().expect("worker starts");
    let sum = add::send(20, 22)
        .await
        .expect("sent")
        .get()
        .await
        .expect("result");
    assert_eq!(sum, 42);
    let moved = shift::send(Point { x: 0, y: 0 }, 3)
        .await
        .expect("sent")
        .get()
        .await
        .expect("result");
    assert_eq!(moved, Point { x: 3, y: 3 });

    // A typed handle from the UUID alone, in whatever queue the task went to.
    let worker_q = Worker::auto()
        .queue("elsewhere")
        .spawn()
        .expect("worker starts");
    let sent = shift::s(Point { x: 1, y: 1 }, 1)
        .queue("elsewhere")
        .send()
        .await
        .expect("sent");
    let found: AsyncResult<Point> = shift::result(sent.uuid()).expect("a server is installed");
    assert_eq!(found.get().await.expect("result"), Point { x: 2, y: 2 });
    assert_eq!(found.queue(), "elsewhere");
    let again = shift::result_with(&server, sent.uuid());
    assert_eq!(again.get().await.expect("result"), Point { x: 2, y: 2 });
    worker_q.shutdown().await.expect("worker stops");
    worker.shutdown().await.expect("worker stops");
}

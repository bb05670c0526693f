//! Micro-benchmarks: signature envelope encode/decode, argument encoding, and one task
//! through the in-memory engine.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use machinery_core::prelude::*;
use machinery_core::{RawSignature, TaskState};

#[task(name = "bench.add")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

fn envelope(c: &mut Criterion) {
    let raw = add::s(1, 2)
        .header("tenant", "acme")
        .into_raw()
        .expect("encode args");
    let bytes = raw.encode().expect("encode");
    c.bench_function("signature_encode", |b| b.iter(|| black_box(&raw).encode()));
    c.bench_function("signature_decode", |b| {
        b.iter(|| RawSignature::decode(black_box(&bytes)))
    });
    c.bench_function("args_encode", |b| {
        b.iter(|| add::s(black_box(1), black_box(2)))
    });
    let state = TaskState::new(raw.uuid, raw.name.clone(), "default", State::Success);
    c.bench_function("state_encode", |b| b.iter(|| black_box(&state).encode()));
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = Server::memory();
    let worker = rt
        .block_on(async { Worker::new().task(add::ENTRY).server(&server).spawn() })
        .expect("worker");
    c.bench_function("memory_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            let r = add::s(1, 2).send_with(&server).await.expect("send");
            r.get_timeout(Duration::from_secs(5)).await.expect("result")
        })
    });
    rt.block_on(worker.shutdown()).expect("shutdown");
}

criterion_group!(benches, envelope, dispatch);
criterion_main!(benches);

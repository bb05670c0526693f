//! The expansion names only `::core`, `::std` and `::machinery_core`, and resolves the
//! user's types as the function's signature does: none of these local items break it.
#![allow(dead_code, non_camel_case_types)]

use ::machinery_core::prelude::*;

struct Result;
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Box;
struct Vec;
struct String;
struct Future;
struct Send;
struct Sync;
struct Fn;
struct FnOnce;
struct Signature;
struct TaskEntry;
struct Uuid;
struct Server;
struct AsyncResult;
struct Error;
struct __machinery_Args;
mod serde {}
mod inventory {}
mod core {}
mod std {}
mod machinery_core {}

/// A user type named like a generated item.
#[derive(::serde::Serialize, ::serde::Deserialize)]
pub struct Output {
    total: i64,
}

/// And a constant and a function, too.
const NAME: &str = "shadowed";
const ENTRY: u8 = 0;
fn s() {}
fn send() {}
fn result() {}
fn result_with() {}

#[task]
async fn add(a: i64, b: i64) -> ::core::result::Result<Output, TaskError> {
    ::core::result::Result::Ok(Output { total: a + b })
}

#[task]
fn blocking(x: Output) -> ::std::io::Result<Output> {
    ::core::result::Result::Ok(x)
}

fn main() {
    let _ = add::s(1, 2);
    let _: &str = add::NAME;
    let _ = add::ENTRY;
    let _: ::core::option::Option<add::Output> = ::core::option::Option::None;
    let _ = blocking::s(Output { total: 1 });
    let server = ::machinery_core::Server::memory();
    let uuid = ::machinery_core::__private::Uuid::nil();
    let _: ::machinery_core::AsyncResult<add::Output> = add::result_with(&server, uuid);
    let _: ::core::result::Result<
        ::machinery_core::AsyncResult<add::Output>,
        ::machinery_core::Error,
    > = add::result(uuid);
    let _ = blocking::result_with(&server, uuid);
    let _ = (NAME, ENTRY, s, send, result, result_with);
}

//! Typed workflows: chains, groups and chords.
//!
//! - A **chain** runs steps one after another; each step receives the previous step's
//!   result as its **last** argument, so a step is built with `task::partial(..)` (every
//!   argument but the last). A full signature (`task::s(..)`, `task::si(..)`) as a step
//!   ignores the previous result. The compiler rejects a step whose last parameter does
//!   not take the previous step's output.
//! - A **group** runs members (signatures or chains) in parallel; its result is a `Vec`
//!   of the members' results in member order.
//! - A **chord** is a group plus a callback that receives that `Vec` as its last
//!   argument once every member succeeded. The callback is published exactly once; a
//!   member that fails for good fails the chord instead.
//!
//! ```standalone_crate
//! use machinery_core::prelude::*;
//!
//! #[task]
//! async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
//!     Ok(a + b)
//! }
//!
//! #[task]
//! async fn sum(values: Vec<i64>) -> Result<i64, TaskError> {
//!     Ok(values.iter().sum())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), machinery_core::Error> {
//! let server = Server::memory();
//! let worker = Worker::auto().server(&server).spawn()?;
//!
//! // (2 + 2) + 5 = 9
//! let chain = add::s(2, 2).then(add::partial(5)).send_with(&server).await?;
//! assert_eq!(chain.get().await?, 9);
//!
//! // [2, 4, 11]
//! let members = vec![add::s(1, 1), add::s(2, 2), add::s(5, 6)];
//! let sums = group(members.clone()).send_with(&server).await?;
//! assert_eq!(sums.get().await?, vec![2, 4, 11]);
//!
//! // sum([2, 4, 11]) = 17
//! let total = group(members).chord(sum::partial()).send_with(&server).await?;
//! assert_eq!(total.get().await?, 17);
//! # worker.shutdown().await
//! # }
//! ```

pub(crate) mod build;
mod chain;
mod group;
pub(crate) mod record;
mod step;

pub use chain::{Chain, ChainResult};
pub use group::{Chord, ChordResult, Group, GroupResult, group};
pub use step::{ErrorCallback, Flow, Partial, Step};

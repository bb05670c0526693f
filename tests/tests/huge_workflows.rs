//! Workflows of 100,000 members on the memory engine: too heavy for every engine's
//! conformance run, kept here so they run on every `cargo test`.

use machinery_core::testing::{block_on, memory, suite};

#[test]
fn group_of_100_000_members() {
    block_on(suite::wf_huge_group(&memory));
}

#[test]
fn chord_of_100_000_members() {
    block_on(suite::wf_huge_chord(&memory));
}

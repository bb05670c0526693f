//! Compile tests of `#[task]`: what it accepts, and the error for each mistake.
//!
//! Regenerate the expected errors with `TRYBUILD=overwrite cargo test -p machinery-macros
//! --test ui` and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}

//! End-to-end tests of Machinery for Rust; the tests live in `tests/tests/`.

//! Runnable examples of Machinery for Rust; see the `examples/` folder.

//! The engine conformance suite on the in-memory engine.

machinery_core::conformance_suite!(machinery_core::testing::memory);

//! Redis broker and result backend for [`machinery_core`].
//!
//! The engine lands with the Redis issue; this crate holds its place in the workspace.

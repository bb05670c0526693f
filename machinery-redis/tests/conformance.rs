//! The engine conformance suite on Redis (a private `redis-server`).

mod common;

use machinery_redis as _;

machinery_core::conformance_suite!(common::server);

//! Shared helpers for integration tests: the real servers they run against, see [`servers`]:
//! Azurite, started by each test for itself, and a real OpenSearch node, normally the one the
//! tests of a run share, with each test under its own index prefix (`flowlogd::Es::engine`).

// Every file in tests/ is its own crate that does `mod common;` and uses only part of this
// module; what one crate leaves unused would fail `clippy -D warnings` as dead code there.
#![allow(dead_code)]

pub mod blobs;
pub mod enrichment;
pub mod flowlogd;
pub mod proxies;
pub mod rng;
pub mod sas;
pub mod servers;

// Shorthand for `common::servers::…`; unused in crates that take the long path.
#[allow(unused_imports)]
pub use servers::{Azurite, OpenSearch};

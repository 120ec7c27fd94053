//! Derived fields computed from a decoded tuple and its record (pure functions, no I/O).

pub mod classify;
pub mod community_id;
pub mod protocol;
pub mod resource_id;

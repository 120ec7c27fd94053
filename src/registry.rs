//! Sled-backed registry of per-blob read offsets.

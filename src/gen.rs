//! Deterministic generator of realistic flow-log blobs.

//! Turning decoded (and enriched) tuples into documents: the ECS and Logstash layouts, their
//! deterministic ids and index names, written straight into NDJSON bulk bodies by a
//! hand-written JSON writer (the hot path, kept hand-written for speed).
pub mod document;
pub mod index_name;
pub mod json;

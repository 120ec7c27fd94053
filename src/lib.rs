//! flowlogd: ships Azure NSG and VNet flow logs from Blob Storage into Elasticsearch,
//! one document per flow tuple, reading only the bytes appended since the last poll.
//!
//! Module map:
//! - [`ack`]: ordered per-blob commits of acknowledged chunks.
//! - [`app`]: the daemon's wiring, its once and forever loops, and its shutdown order.
//! - [`bulk_buffer`]: the NDJSON bulk body documents travel in, from the encoder to the sink.
//! - [`metrics`]: Prometheus metrics and readiness.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`systemd`]: sd_notify readiness and watchdog.
//! - [`cli`]: the command line (subcommands).
//! - [`config`]: the configuration file, environment overrides and validation.
//! - [`flowlog`]: decoding of flow-log records and tuples (pure, no I/O).
//! - [`enrich`]: derived fields (resource-id parts, flow classification, community id),
//!   lookups (named networks, service tags, GeoIP/ASN) and `[[filter]]` rules.
//! - [`event_driven`]: the `[source.events]` mode: receiving BlobCreated events, reading the
//!   blobs they name, deleting messages once committed.
//! - [`encode`]: document layouts (ECS, Logstash), ids, index names, the JSON writer.
//! - [`index_pattern`]: the `index` option's `%{+…}` patterns: parsing, validation, formatting
//!   (a shared leaf).
//! - [`sink`]: bulk indexing, retries, dead letters, cluster setup and checks.
//! - [`source`]: Azure Storage access: credentials, listing, ranged reads.
//! - [`registry`]: per-blob read offsets in sled.
//! - [`ownership`]: shared ownership of units between instances, through blobs with
//!   conditional writes (`[cluster] coordination_container`).
//! - [`secret`]: a string that never shows itself in logs or errors.
//! - [`generator`]: deterministic generator of realistic flow logs.
//! - [`pipeline`]: blob bytes → records → tuples → bulk items (pure).
//! - [`poller`]: the pure polling policy: listing + registry entries → actions.
//! - [`polling`]: carries out the poller's plan for a source: listing, registry entries,
//!   rewrite deletes, read scheduling.
pub mod ack;
pub mod app;
pub mod bulk_buffer;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod encode;
pub mod enrich;
pub mod event_driven;
pub mod flowlog;
pub mod generator;
pub mod http;
pub mod index_pattern;
pub mod metrics;
pub mod ownership;
pub mod pipeline;
pub mod poller;
pub mod polling;
pub mod registry;
pub mod secret;
pub mod shard;
pub mod sink;
pub mod source;
pub mod systemd;

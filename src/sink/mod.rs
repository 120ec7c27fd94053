//! Delivering documents to Elasticsearch/OpenSearch: bulk requests, retries, dead letters,
//! and the cluster setup (templates, lifecycle policies, checks).
pub mod bulk;
pub mod client;
pub mod dead_letter;
pub mod retry;
pub mod template;

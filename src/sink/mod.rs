//! Turning decoded tuples into indexable documents and delivering them to Elasticsearch.
pub mod bulk;
pub mod client;
pub mod dead_letter;
pub mod document;
pub mod index_name;
pub mod json;
pub mod retry;
pub mod template;

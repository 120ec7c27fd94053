//! Turning decoded tuples into indexable documents and delivering them to Elasticsearch.
pub mod document;
pub mod index_name;
pub mod json;

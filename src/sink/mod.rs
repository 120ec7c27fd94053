//! Turning decoded tuples into indexable documents and delivering them to Elasticsearch.

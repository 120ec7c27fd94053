//! Azure Blob Storage access: credentials, listing, ranged reads.
pub mod client;
pub mod credential;
pub mod events;
pub mod layout;
pub mod listing;
pub mod reader;
pub mod shared_key;
pub mod upload;
pub mod walker;

//! The error of an enrichment input (service tags file, MaxMind database, filter rule) that
//! cannot be used: every variant names its file or rule, for a one-line startup error or log.
use std::path::PathBuf;

/// An enrichment input that cannot be used; every variant names its file.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("service tags file {}: {reason}", path.display())]
    ServiceTags { path: PathBuf, reason: String },
    #[error("MaxMind database {}: {reason}", path.display())]
    Database { path: PathBuf, reason: String },
    /// The file could not be looked at during a reload check.
    #[error("{}: {reason}", path.display())]
    Reload { path: PathBuf, reason: String },
    #[error("filter {rule:?}: {network:?} is not the name of a [[network]]")]
    UnknownNetwork { rule: String, network: String },
}

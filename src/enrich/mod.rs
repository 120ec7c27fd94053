//! Derived fields computed from a decoded tuple and its record (pure functions, no I/O), and
//! the optional lookups and filters configured by `[enrich]`, `[[network]]` and `[[filter]]`
//! (named networks, Azure service tags, GeoIP/ASN from MaxMind files, drop/keep rules).

pub mod classify;
pub mod community_id;
pub mod enricher;
pub mod error;
pub mod filter;
pub mod geoip;
pub mod networks;
pub mod prefix_table;
pub mod protocol;
pub mod reload;
pub mod resource_id;
pub mod routable;
pub mod service_tags;
pub mod testdata;

pub use enricher::{Enricher, Lookups, ReloadOutcome, SideEnrichment, Slot};
pub use error::EnrichError;
pub use filter::{Filter, FlowContext, RecordResources, Verdict};

use std::sync::Arc;

use crate::config::enrich::{EnrichConfig, FilterRuleConfig, NetworkConfig};

/// The lookups and rules one configuration asks for, ready to share between encoders: what
/// `run`, `once`, `tail` and `decode --enrichment` build at startup. An unusable file or rule
/// is an error naming it (they must not run without a lookup or rule they were given).
pub fn build(
    enrich: &EnrichConfig,
    networks: &[NetworkConfig],
    rules: &[FilterRuleConfig],
) -> Result<(Arc<Enricher>, Arc<Filter>), EnrichError> {
    Ok((
        Arc::new(Enricher::from_config(enrich, networks)?),
        Arc::new(Filter::from_config(rules, networks)?),
    ))
}

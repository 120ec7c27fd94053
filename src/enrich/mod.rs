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
